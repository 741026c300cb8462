//! Condition bookkeeping with the semantics of apimachinery's
//! `meta.SetStatusCondition`: one entry per type, `lastTransitionTime`
//! changes only when `status` flips.

use crate::api::{Condition, ConditionStatus, Time};

/// Sets (adds or updates) the condition of `type_`.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
                c.status = status;
            }
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flip() {
        let t1 = Time(jiff::Timestamp::from_second(100).unwrap());
        let t2 = Time(jiff::Timestamp::from_second(200).unwrap());
        let mut cs = Vec::new();
        set(&mut cs, "Ready", ConditionStatus::False, "Pending", "a", Some(1), t1);
        set(&mut cs, "Ready", ConditionStatus::False, "Capturing", "b", Some(1), t2);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, t1);
        assert_eq!(cs[0].reason, "Capturing");
        set(&mut cs, "Ready", ConditionStatus::True, "Captured", "c", Some(1), t2);
        assert_eq!(cs[0].last_transition_time, t2);
        assert!(is_true(&cs, "Ready"));
    }
}
