//! The primary coordinator dies under load: the standby serves as primary
//! within 2 s (design brief, "Primary loss"), writes through it never stop
//! succeeding, and the old primary, restarted, sees the higher epoch and
//! stays STANDBY.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use opticache_proto::v1 as pb;
use pb::opti_cache_client::OptiCacheClient;
use tonic::transport::Channel;

/// Writers sent to the primary (they fail once it is killed) and to the standby (they never may).
const WRITERS_TO_PRIMARY: usize = 4;
const WRITERS_TO_STANDBY: usize = 2;
/// The brief's bound is 2 s; the margin covers the 25 ms polling and a loaded machine.
const TAKEOVER_MAX: Duration = Duration::from_millis(2500);

#[derive(Debug, Default)]
struct Writes {
    /// (key, version, value) of every acknowledged write.
    acked: Mutex<Vec<(Bytes, u64, Bytes)>>,
    /// (when, code, message) of every failed write.
    failed: Mutex<Vec<(Instant, tonic::Code, String)>>,
}

async fn writer(mut client: OptiCacheClient<Channel>, name: String, writes: Arc<Writes>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = Bytes::from(format!("{name}-{n}"));
        let value = value_of(n ^ (name.len() as u64) << 40, 100);
        let request =
            pb::WriteRequest { namespace: "failover".into(), key: key.clone(), value: value.clone(), ttl_ms: 0 };
        match client.write_cache(request).await {
            Ok(r) => writes.acked.lock().unwrap().push((key, r.into_inner().version, value)),
            Err(s) => {
                writes.failed.lock().unwrap().push((Instant::now(), s.code(), s.message().to_string()));
                // A dead coordinator refuses at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        n += 1;
    }
}

fn acked(writes: &Writes) -> usize {
    writes.acked.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_within_two_seconds_and_the_old_primary_steps_down() {
    let mut cluster = Cluster::start().await;
    let (old, old_epoch) = cluster.agreed_primary().await.expect("a primary after start");
    let new = 1 - old;

    let stop_primary = Arc::new(AtomicBool::new(false));
    let stop_standby = Arc::new(AtomicBool::new(false));
    let to_primary = Arc::new(Writes::default());
    let to_standby = Arc::new(Writes::default());
    let mut primary_tasks = Vec::new();
    let mut standby_tasks = Vec::new();
    for w in 0..WRITERS_TO_PRIMARY {
        let task = writer(cluster.client(old), format!("p{w}"), to_primary.clone(), stop_primary.clone());
        primary_tasks.push(tokio::spawn(task));
    }
    for w in 0..WRITERS_TO_STANDBY {
        let task = writer(cluster.client(new), format!("s{w}"), to_standby.clone(), stop_standby.clone());
        standby_tasks.push(tokio::spawn(task));
    }
    cluster
        .wait_for("writes through both coordinators", async |_| {
            let (p, s) = (acked(&to_primary), acked(&to_standby));
            if p >= 200 && s >= 50 {
                Ok(())
            } else {
                Err(format!("{p} through the primary, {s} through the standby"))
            }
        })
        .await;

    // SIGKILL the primary under its load; time the standby's takeover.
    // Measured from just before the signal: a conservative figure.
    let killed_at = Instant::now();
    cluster.coordinators[old].signal(libc::SIGKILL);
    let mut standby = cluster.client(new);
    let (took, new_epoch) = loop {
        let status = standby.cluster_status(pb::ClusterStatusRequest {}).await.expect("the standby answers");
        let status = status.into_inner();
        if status.role() == pb::Role::Primary && status.epoch > old_epoch {
            break (killed_at.elapsed(), status.epoch);
        }
        assert!(killed_at.elapsed() < DEADLINE, "no takeover after {DEADLINE:?}: {:?}", status.role());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("takeover: the standby reported PRIMARY at epoch {new_epoch} {took:?} after the kill (was {old_epoch})");
    assert!(took <= TAKEOVER_MAX, "the standby took {took:?} to become primary (bound {TAKEOVER_MAX:?})");
    let status = cluster.coordinators[old].wait_exit().await;
    assert!(status.code().is_none(), "the old primary died of the kill: {status}");

    // The load on the dead primary is over; the standby's goes on.
    stop_primary.store(true, Ordering::Relaxed);
    for task in primary_tasks {
        task.await.expect("a writer to the primary");
    }
    let acked_at_takeover = acked(&to_standby);
    cluster
        .wait_for("more writes through the new primary", async |_| {
            let s = acked(&to_standby);
            if s >= acked_at_takeover + 200 {
                Ok(())
            } else {
                Err(format!("{s} acknowledged"))
            }
        })
        .await;

    // The old primary comes back: it sees the higher epoch and stays STANDBY.
    cluster.coordinators[old].spawn();
    let restarted_at = Instant::now();
    cluster
        .wait_for("the restarted coordinator to serve as STANDBY at the new epoch", async |cluster| {
            let health = cluster.health(old).await?;
            let status = cluster.status(old).await.map_err(|s| s.to_string())?;
            match (health, status.role(), status.epoch) {
                (tonic_health::pb::health_check_response::ServingStatus::Serving, pb::Role::Standby, e)
                    if e == new_epoch =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    // Long enough for a standby that heard no primary to take over (twice
    // failover_after_ms): the roles must hold all along.
    let mut polls = 0;
    while restarted_at.elapsed() < Duration::from_millis(2 * FAILOVER_AFTER_MS + 500) {
        let back = cluster.status(old).await.expect("the restarted coordinator answers");
        let primary = cluster.status(new).await.expect("the new primary answers");
        assert_eq!((back.role(), back.epoch), (pb::Role::Standby, new_epoch), "the returning old primary");
        assert_eq!((primary.role(), primary.epoch), (pb::Role::Primary, new_epoch), "the new primary");
        polls += 1;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert!(polls > 10, "the roles were checked {polls} times");

    stop_standby.store(true, Ordering::Relaxed);
    for task in standby_tasks {
        task.await.expect("a writer to the standby");
    }

    // Every write through the standby succeeded, before, during and after the takeover.
    let failed = to_standby.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "writes through the standby failed: {failed:?}");
    // Writes through the killed primary failed only after the kill.
    let failed = to_primary.failed.lock().unwrap().clone();
    assert!(failed.iter().all(|(at, _, _)| *at >= killed_at), "writes failed before the kill: {failed:?}");
    let (p, s) = (acked(&to_primary), acked(&to_standby));
    println!(
        "{p} writes acknowledged by the old primary, {s} by the standby ({} after the takeover), {} refused after the kill",
        s - acked_at_takeover,
        failed.len()
    );

    // Every acknowledged write, through either, reads back through both coordinators.
    let all: Vec<(Bytes, u64, Bytes)> =
        to_primary.acked.lock().unwrap().iter().chain(to_standby.acked.lock().unwrap().iter()).cloned().collect();
    for c in [new, old] {
        let mut client = cluster.client(c);
        for part in all.chunks(1000) {
            let keys = part.iter().map(|(k, _, _)| k.clone()).collect();
            let results = client
                .batch_read(pb::BatchReadRequest { namespace: "failover".into(), keys })
                .await
                .expect("BatchRead")
                .into_inner()
                .results;
            for ((key, version, value), r) in part.iter().zip(&results) {
                assert!(
                    r.found && r.version == *version && r.value == *value,
                    "coordinator {c}: {key:?} acknowledged at {version}, read found={} version={}",
                    r.found,
                    r.version
                );
            }
        }
    }
    // And the restarted coordinator takes writes too.
    let v = write(&mut cluster.client(old), "failover", b"after", Bytes::from_static(b"back")).await;
    let got = read(&mut cluster.client(new), "failover", b"after").await;
    assert_eq!((got.found, got.version), (true, v));
}

/// A newer epoch appears at every node (as when another primary took over
/// behind a partition): the primary learns it from a fenced write or a
/// heartbeat and steps down, a coordinator takes over above that epoch, and
/// writes through both coordinators go on. A fenced write is sent again with
/// the new epoch or refused as UNAVAILABLE, never as a version conflict, and
/// every acknowledged write reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_epoch_at_the_nodes_deposes_the_primary_without_failing_writes_as_conflicts() {
    let cluster = Cluster::start().await;
    let (_, old_epoch) = cluster.agreed_primary().await.expect("a primary after start");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Writes::default());
    let mut tasks = Vec::new();
    for c in 0..2 {
        for w in 0..WRITERS_TO_STANDBY {
            tasks.push(tokio::spawn(writer(cluster.client(c), format!("e{c}-{w}"), writes.clone(), stop.clone())));
        }
    }
    let wait_acked = |at_least: usize| {
        let writes = writes.clone();
        async move |_: &Cluster| {
            let n = acked(&writes);
            if n >= at_least {
                Ok(())
            } else {
                Err(format!("{n} acknowledged"))
            }
        }
    };
    cluster.wait_for("writes through both coordinators", wait_acked(100)).await;

    let fenced_by = old_epoch + 10;
    for i in 0..cluster.node_addresses.len() {
        cluster
            .node_client(i)
            .heartbeat(opticache_proto::node::v1::HeartbeatRequest { epoch: fenced_by })
            .await
            .expect("a node heartbeat");
    }
    let new_epoch = cluster
        .wait_for("a primary above the epoch the nodes have seen", async |cluster| {
            match cluster.agreed_primary().await {
                Ok((_, epoch)) if epoch > fenced_by => Ok(epoch),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    let acked_at_takeover = acked(&writes);
    cluster.wait_for("writes after the takeover", wait_acked(acked_at_takeover + 100)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a writer");
    }

    let failed = writes.failed.lock().unwrap().clone();
    assert!(
        failed.iter().all(|(_, code, _)| *code == tonic::Code::Unavailable),
        "a fenced write must be resent or refused as UNAVAILABLE: {failed:?}"
    );
    let all = writes.acked.lock().unwrap().clone();
    println!("epoch {old_epoch} -> {new_epoch}: {} writes acknowledged, {} refused", all.len(), failed.len());
    let mut client = cluster.client(0);
    for part in all.chunks(1000) {
        let keys = part.iter().map(|(k, _, _)| k.clone()).collect();
        let request = pb::BatchReadRequest { namespace: "failover".into(), keys };
        let results = client.batch_read(request).await.expect("BatchRead").into_inner().results;
        for ((key, version, value), r) in part.iter().zip(&results) {
            assert!(
                r.found && r.version == *version && r.value == *value,
                "{key:?} acknowledged at {version}, read found={} version={}",
                r.found,
                r.version
            );
        }
    }
}
