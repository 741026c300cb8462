//! Types shared by every kind: phases, conditions and timestamps.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Coarse lifecycle of a snapshot or restore, kept for printer columns and
/// scripts; the conditions carry the detail.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, not started.
    Pending,
    /// Work under way.
    InProgress,
    /// Finished successfully.
    Completed,
    /// Finished unsuccessfully; a condition says why.
    Failed,
}

impl Phase {
    /// Whether no more work will happen on the object (until it changes).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed)
    }

    /// The phase as printed in tables and status files.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::InProgress => "InProgress",
            Phase::Completed => "Completed",
            Phase::Failed => "Failed",
        }
    }
}

/// `True`, `False` or `Unknown`, as in `metav1.ConditionStatus`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

/// One condition, in the shape of `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// CamelCase type, e.g. `Ready`, `Progressing`, `Succeeded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// CamelCase machine-readable reason for the last transition.
    pub reason: String,
    /// Human-readable detail: what happened and what to do about it.
    pub message: String,
    /// When `status` last changed (not when the message last changed).
    pub last_transition_time: Time,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A point in time, serialised as RFC 3339 with second precision like
/// `metav1.Time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub jiff::Timestamp);

impl Time {
    /// The current time, truncated to whole seconds.
    pub fn now() -> Self {
        Self::from_timestamp(jiff::Timestamp::now())
    }

    /// Wraps a timestamp, truncated to whole seconds.
    pub fn from_timestamp(ts: jiff::Timestamp) -> Self {
        Time(jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts))
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<jiff::Timestamp>()
            .map(Time)
            .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 time {text:?}: {e}")))
    }
}

impl JsonSchema for Time {
    fn schema_name() -> Cow<'static, str> {
        "Time".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}
