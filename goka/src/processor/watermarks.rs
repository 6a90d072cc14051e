//! Follows the high watermarks of the partitions a processor instance owns, so its monitor
//! can show lag per partition: of its inputs (high watermark minus the next offset to
//! commit), of the tables it joins and of those it follows in hot standby.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::group::Group;

/// How often the high watermarks are read.
const EVERY: Duration = Duration::from_secs(2);

/// Reads the high watermark of every input partition this instance runs, every [`EVERY`],
/// until the processor stops. Failures are logged and retried: lag is information, not a
/// reason to stop.
pub(super) async fn follow<P: Group>(shared: Arc<Shared>) {
    let admin = match shared.client.admin() {
        Ok(admin) => admin,
        Err(error) => {
            tracing::warn!(group = shared.group, %error, "cannot read high watermarks");
            return;
        }
    };
    loop {
        let partitions: Vec<i32> = shared
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        // A read waits up to the client's request timeout while the broker is unreachable:
        // stopping must not wait for it.
        let read = async {
            for edge in P::GRAPH.inputs {
                for &partition in &partitions {
                    match admin.watermarks(edge.topic, partition).await {
                        Ok((_, high)) => {
                            shared
                                .high_watermarks
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert((edge.topic, partition), high);
                        }
                        Err(error) => {
                            tracing::debug!(group = shared.group, topic = edge.topic, partition, %error, "high watermark not read");
                        }
                    }
                }
            }
            // Joined tables keep being read, and so do the tables followed in hot standby:
            // their lag follows their changelogs' ends.
            for edge in P::GRAPH.table.iter().chain(P::GRAPH.joins) {
                let mut followed = shared.standby_figures.of_topic(edge.topic);
                if edge.kind == crate::graph::EdgeKind::Join {
                    followed.extend(shared.table_figures.of_topic(edge.topic));
                }
                for table in followed {
                    if let Ok((_, high)) = admin.watermarks(edge.topic, table.partition()).await {
                        table.saw_high_watermark(high);
                    }
                }
            }
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = read => {}
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
