//! Kubernetes Events (`events.k8s.io/v1`) about detour's objects: failovers, failbacks
//! and rejected documents, where `kubectl describe` and `kubectl events` show them.
//!
//! Each notice is its own Event. (kube-runtime's `Recorder` folds repeats of one reason
//! into a series that keeps the first note, which would hide a new validation message.)

use super::Error;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// `reportingController` of every Event detour publishes.
pub const REPORTING_CONTROLLER: &str = "detour.dev/controller";
/// Largest note the API accepts.
const MAX_NOTE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// What happened, about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    /// `FailedOver`, `FailedBack`, `Invalid`, `Accepted`.
    pub reason: &'static str,
    /// What detour did: `Route`, `Validate`.
    pub action: &'static str,
    pub note: String,
}

/// Publishes notices as Events.
#[derive(Clone)]
pub struct EventSink {
    client: Client,
    /// This replica (`reportingInstance`).
    instance: String,
}

impl EventSink {
    pub fn new(client: Client, instance: &str) -> EventSink {
        EventSink {
            client,
            instance: instance.to_string(),
        }
    }

    /// Creates one Event about `regarding` (in its namespace; cluster-scoped objects' in
    /// `default`, where `kubectl describe` looks for them).
    pub async fn publish(&self, regarding: &ObjectReference, notice: &Notice) -> Result<(), Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let event = event(regarding, notice, &self.instance, Timestamp::now());
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }
}

/// The Event for `notice` at `now`; its name is unique per object and nanosecond.
pub fn event(
    regarding: &ObjectReference,
    notice: &Notice,
    instance: &str,
    now: Timestamp,
) -> Event {
    let name = regarding.name.as_deref().unwrap_or("detour");
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(
                regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(notice.action.to_string()),
        reason: Some(notice.reason.to_string()),
        note: Some(truncate(&notice.note, MAX_NOTE)),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
        reporting_instance: Some(instance.to_string()),
        type_: Some(
            match notice.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_string(),
        ),
        ..Event::default()
    }
}

/// At most `max` bytes, cut on a character boundary, marked when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = truncate(&long, MAX_NOTE);
        assert!(cut.len() <= MAX_NOTE);
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short", MAX_NOTE), "short");
    }

    #[test]
    fn cluster_scoped_objects_get_their_events_in_default() {
        let regarding = ObjectReference {
            kind: Some("MemberCluster".into()),
            name: Some("west".into()),
            ..ObjectReference::default()
        };
        let notice = Notice {
            type_: EventType::Warning,
            reason: "Invalid",
            action: "Validate",
            note: "spec.gateway: taken".into(),
        };
        let e = event(&regarding, &notice, "detour-0", Timestamp::UNIX_EPOCH);
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.metadata.name.as_deref(), Some("west.0"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(
            e.reporting_controller.as_deref(),
            Some(REPORTING_CONTROLLER)
        );
    }
}
