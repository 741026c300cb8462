//! `--http-addr`: `/healthz`, `/readyz` and `/metrics` scraped from a running
//! daemon and read with a Prometheus text parser, and the example alert
//! rules checked against what is exported.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use crate::util::*;

/// GET `path` from `port`: status code and body (code 0: no answer).
fn get(port: u16, path: &str) -> (u16, String) {
    let answer = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })();
    let Ok(reply) = answer else { return (0, String::new()) };
    let code = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (code, body) = get(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches = |s: &&prometheus_parse::Sample| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
    scrape.samples.iter().filter(|s| s.metric == metric).find(matches).map(|s| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    })
}

#[test]
fn metrics_health_and_readiness_are_served_and_parse() {
    let env = Env::new();
    let app = env.data_dir("app");
    write_numbered_files(&app, 10);
    env.write_manifest("s.yaml", &snapshot_yaml("s", &[("app", &app)], ""));
    env.write_manifest("bad.yaml", &snapshot_yaml("bad", &[("app", std::path::Path::new("/nonexistent/x"))], ""));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _daemon = env.start(&["--http-addr", &addr]);
    wait_for("the health endpoint", TIMEOUT, || match get(port, "/healthz") {
        (200, body) if body == "ok\n" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    env.wait_completed("s");
    env.wait_settled(SNAPSHOTS, "bad");
    wait_for("readiness after the first pass", TIMEOUT, || match get(port, "/readyz") {
        (200, _) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let scrape = wait_for("the objects gauge to count both", TIMEOUT, || {
        let s = scrape(port);
        match value(&s, "volsnap_objects", &[("kind", "VolumeSnapshot"), ("phase", "Failed")]) {
            Some(v) if v >= 1.0 => Ok(s),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(value(&scrape, "volsnap_captures_total", &[("result", "succeeded")]), Some(1.0));
    assert_eq!(value(&scrape, "volsnap_objects", &[("kind", "VolumeSnapshot"), ("phase", "Completed")]), Some(1.0));
    let bytes = scrape.samples.iter().find(|s| s.metric == "volsnap_captured_bytes_total").expect("bytes counter");
    // OpenMetrics names the family without `_total`, which this parser then
    // reads as untyped: the value is what matters.
    let counted = match bytes.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
        _ => 0.0,
    };
    assert!(counted > 0.0, "{:?}", bytes.value);
    assert!(scrape.docs.contains_key("volsnap_capture_duration_seconds"), "{:?}", scrape.docs.keys());
    assert_eq!(get(port, "/nope").0, 404);
}

#[test]
fn the_example_alert_rules_parse_and_name_exported_metrics() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/monitoring/prometheus-alerts.yaml"))
            .unwrap();
    let rules: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    // Families print once they have a series: give each one.
    let metrics = volsnap::metrics::Metrics::new();
    metrics.captures.get_or_create(&volsnap::metrics::result("failed")).inc();
    metrics.restores.get_or_create(&volsnap::metrics::result("failed")).inc();
    let schedule = volsnap::metrics::ScheduleLabel { namespace: "default".into(), schedule: "nightly".into() };
    metrics.schedule_last_success.get_or_create(&schedule).set(1.0);
    metrics.set_objects(std::iter::empty());
    let exported = metrics.encode();
    let mut checked = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            for word in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("volsnap_"))
            {
                let family = word.trim_end_matches("_total");
                assert!(exported.contains(&format!("# TYPE {family} ")), "{word} is not exported:\n{exported}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 5);
}
