//! The floor of the node's gRPC front on this machine: a server speaking the
//! node API (`Put`, `Get`, `BatchGet`, `BatchPut`) from a locked in-memory map, with the
//! node's own tonic settings, and nothing else: no shards, no engine, no disk,
//! no metrics. `loadgen --target node://ADDR` drives it like a real node, so
//! the gap between this and `opticache-node` is what the node adds, and the
//! gap between this and Redis is what HTTP/2 and gRPC cost (docs/benchmarks.md).
//!
//! ```sh
//! cargo run --release -p opticache-node --example grpc_floor -- 127.0.0.1:47002 [FRONT_THREADS]
//! ```
//!
//! Other calls answer UNIMPLEMENTED. Versions count up from 1.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures_lite::Stream;
use opticache_proto::node::v1 as pb;
use pb::node_server::{Node, NodeServer};
use tonic::{Request, Response, Status, Streaming};

/// The node's own windows (node/src/server.rs).
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
const MESSAGE_BYTES_MAX: usize = 80 << 20;

#[derive(Debug, Default)]
struct Floor {
    values: Mutex<HashMap<(Bytes, Bytes), (Bytes, u64)>>,
    clock: AtomicU64,
}

impl Floor {
    fn get_one(&self, req: pb::GetRequest) -> pb::GetResponse {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        match values.get(&(req.namespace, req.key)) {
            Some((value, version)) => {
                pb::GetResponse { found: true, value: value.clone(), version: *version, expiry_unix_ms: 0 }
            }
            None => pb::GetResponse::default(),
        }
    }

    fn put_one(&self, req: pb::PutRequest) -> pb::PutResponse {
        let version = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.insert((req.namespace, req.key), (req.value, version));
        pb::PutResponse { applied: true, version }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::GetChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Node for Floor {
    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(self.put_one(request.into_inner())))
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        Ok(Response::new(self.get_one(request.into_inner())))
    }

    async fn update(&self, _: Request<pb::UpdateRequest>) -> Result<Response<pb::UpdateResponse>, Status> {
        Err(Status::unimplemented("not in the floor server"))
    }

    async fn delete(&self, _: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        Err(Status::unimplemented("not in the floor server"))
    }

    async fn batch_put(&self, request: Request<pb::BatchPutRequest>) -> Result<Response<pb::BatchPutResponse>, Status> {
        let results = request.into_inner().entries.into_iter().map(|e| self.put_one(e)).collect();
        Ok(Response::new(pb::BatchPutResponse { results }))
    }

    async fn batch_get(&self, request: Request<pb::BatchGetRequest>) -> Result<Response<pb::BatchGetResponse>, Status> {
        let results = request.into_inner().keys.into_iter().map(|k| self.get_one(k)).collect();
        Ok(Response::new(pb::BatchGetResponse { results }))
    }

    async fn put_stream(&self, _: Request<Streaming<pb::PutChunk>>) -> Result<Response<pb::PutResponse>, Status> {
        Err(Status::unimplemented("not in the floor server"))
    }

    type GetStreamStream = ChunkStream;

    async fn get_stream(&self, _: Request<pb::GetRequest>) -> Result<Response<ChunkStream>, Status> {
        Err(Status::unimplemented("not in the floor server"))
    }

    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("not in the floor server"))
    }

    async fn stats(&self, _: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        Err(Status::unimplemented("not in the floor server"))
    }

    async fn list_keys(&self, _: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        Err(Status::unimplemented("not in the floor server"))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().ok_or("usage: grpc_floor HOST:PORT [FRONT_THREADS]")?;
    let threads = match args.next() {
        Some(n) => n.parse()?,
        None => std::thread::available_parallelism()?.get(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&address).await?;
        eprintln!("grpc_floor: serving on {}", listener.local_addr()?);
        let incoming = futures_lite::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true);
            }
            conn
        });
        let service = NodeServer::new(Floor::default())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        tonic::transport::Server::builder()
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .add_service(service)
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    })
}
