//! The health loop: a heartbeat to every node on the configured interval,
//! fed into the nodes' state machines, and the catch-up of nodes that come
//! back (run by the primary; the standby adopts the primary's decisions).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opticache_proto::node::v1 as node;
use tokio::sync::watch;

use crate::cluster::{Cluster, NodeFigures};
use crate::failover::{Failover, Role};
use crate::health::Probe;
use crate::repair;

/// Runs heartbeats until `stop` turns true. `first_round` is told when every
/// node has answered or missed once (the coordinator serves after that).
pub async fn run(
    cluster: Arc<Cluster>,
    failover: Arc<Mutex<Failover>>,
    interval: Duration,
    first_round: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let repairing: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(vec![false; cluster.members.len()]));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let epoch = failover.lock().expect("failover lock").epoch();
        let probes = (0..cluster.members.len()).map(|i| probe(&cluster, i, epoch, interval)).collect::<Vec<_>>();
        let results = opticache_common::join::join_all(probes).await;
        let is_primary = failover.lock().expect("failover lock").role() == Role::Primary;
        for (i, (probe, figures, node_epoch)) in results.into_iter().enumerate() {
            if let Some(e) = node_epoch {
                crate::failover::learn_epoch(&failover, e, &cluster.members[i].address);
            }
            cluster.apply_probe(i, probe, figures);
            if is_primary && cluster.members[i].needs_catch_up() {
                let mut busy = repairing.lock().expect("repair lock");
                if !busy[i] {
                    busy[i] = true;
                    let (cluster, repairing) = (cluster.clone(), repairing.clone());
                    tokio::spawn(async move {
                        repair::catch_up(&cluster, i).await;
                        repairing.lock().expect("repair lock")[i] = false;
                    });
                }
            }
        }
        let _ = first_round.send(true);
    }
}

/// One heartbeat to node `i`, under the interval as its deadline.
async fn probe(
    cluster: &Cluster,
    i: usize,
    epoch: u64,
    interval: Duration,
) -> (Probe, Option<NodeFigures>, Option<u64>) {
    let mut client = cluster.members[i].client.clone();
    let call = client.heartbeat(node::HeartbeatRequest { epoch });
    match tokio::time::timeout(interval.max(Duration::from_millis(100)), call).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            let serving = r.state == node::ServingState::Serving as i32;
            let figures = NodeFigures { shards: r.shards, keys: r.keys, disk_bytes: r.disk_bytes };
            (Probe::Answered { node_id: r.node_id, serving }, Some(figures), Some(r.epoch))
        }
        _ => (Probe::Missed, None, None),
    }
}
