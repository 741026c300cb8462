//! Memory stays flat however big the data: peak RSS of a 2 GiB capture.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

const LIMIT_KIB: u64 = 64 * 1024;

/// 2 GiB: two sparse (all-zero) files, 64 MiB of random data in 4 files,
/// and a thousand small files in nested directories.
fn make_dataset(root: &Path) -> u64 {
    let mut total = 0u64;
    for (name, len) in [("zeros-a.img", 1u64 << 30), ("zeros-b.img", (1u64 << 30) - (64 << 20) - (4 << 20))] {
        fs::File::create(root.join(name)).unwrap().set_len(len).unwrap();
        total += len;
    }
    for i in 0..4 {
        write_random_file(&root.join(format!("random-{i}.bin")), 16 << 20, 1000 + i);
        total += 16 << 20;
    }
    for d in 0..10 {
        let dir = root.join(format!("small/{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let body = format!("small file {d}/{f}\n").repeat(200);
            total += body.len() as u64;
            fs::write(dir.join(format!("{f:03}.txt")), body).unwrap();
        }
    }
    total
}

/// Peak RSS in KiB of `cmd`: GNU time's %M when present, else VmHWM polled.
fn peak_rss_kib(env: &Env, args: Vec<std::ffi::OsString>) -> (u64, std::process::Output) {
    if Path::new("/usr/bin/time").exists() {
        let report = env.root.join("time.out");
        let mut cmd = Command::new("/usr/bin/time");
        cmd.arg("-f").arg("%M").arg("-o").arg(&report).arg(BIN).args(&args);
        let out = run_bounded(&mut cmd, Duration::from_secs(900));
        let text = fs::read_to_string(&report).unwrap_or_default();
        let kib = text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| {
            panic!("cannot parse /usr/bin/time output {text:?}: {}", show(&out));
        });
        return (kib, out);
    }
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let start = Instant::now();
    let status = loop {
        if let Ok(text) = fs::read_to_string(&status_file)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            peak = peak.max(kib);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(900), "capture did not finish in 15 minutes");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (peak, std::process::Output { status, stdout: Vec::new(), stderr })
}

fn peak_rss_of_a_2gib_capture(compression: &str) {
    let env = Env::new();
    let d = env.data_dir("big");
    let total = make_dataset(&d);
    env.write_manifest("big.yaml", &snapshot_yaml("big", &[("big", &d)], &format!("  compression: {compression}\n")));
    let mut args = env.run_args();
    args.push("--once".into());
    let t = Instant::now();
    let (kib, out) = peak_rss_kib(&env, args);
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{compression}: captured {} MiB in {secs:.1}s ({:.0} MiB/s), peak RSS {} KiB",
        total >> 20,
        (total >> 20) as f64 / secs,
        kib
    );
    assert!(out.status.success(), "capture failed: {}", show(&out));
    let obj = env.status(SNAPSHOTS, "big").unwrap();
    assert_eq!(phase(&obj), "Completed", "{obj}");
    assert_eq!(obj["status"]["volumes"][0]["bytes"].as_u64(), Some(total), "every byte captured");
    assert!(kib < LIMIT_KIB, "{compression}: peak RSS {kib} KiB >= {LIMIT_KIB} KiB for a 2 GiB capture");
}

#[test]
fn peak_rss_of_a_2gib_capture_stays_under_64mib() {
    peak_rss_of_a_2gib_capture("zstd");
}

/// The parallel gzip keeps a bounded number of blocks in flight per core.
#[test]
fn peak_rss_of_a_2gib_gzip_capture_stays_under_64mib() {
    peak_rss_of_a_2gib_capture("gzip");
}
