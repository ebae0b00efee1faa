//! Which role each gRPC method needs, by its path (`/package.Service/Method`).
//!
//! Invariants: health and reflection are open (probes and tools must work
//! without credentials, and they reveal no data); every public data call needs
//! at least `read`; anything not listed — the node API, the coordinators'
//! peer service, and any service added later — needs the cluster credential,
//! so a new internal service is closed until someone decides otherwise.

use opticache_common::Role;

/// What a call needs before its handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    Needs(Role),
}

const PUBLIC_SERVICE: &str = "/opticache.v1.OptiCache/";
const OPEN_SERVICES: [&str; 3] =
    ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/// The access the method at `path` needs.
pub fn required(path: &str) -> Access {
    if OPEN_SERVICES.iter().any(|s| path.starts_with(s)) {
        return Access::Open;
    }
    let Some(method) = path.strip_prefix(PUBLIC_SERVICE) else {
        return Access::Needs(Role::Cluster);
    };
    Access::Needs(match method {
        "ReadCache" | "BatchRead" | "ReadStream" => Role::Read,
        "WriteCache" | "UpdateCache" | "DeleteCache" | "BatchWrite" | "WriteStream" => Role::Write,
        // ClusterStatus, and methods this build does not know (answered UNIMPLEMENTED).
        _ => Role::Admin,
    })
}

/// The method name at the end of `path`, for messages.
pub fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_public_method_needs_the_least_role_that_should_call_it() {
        let cases = [
            ("ReadCache", Role::Read),
            ("BatchRead", Role::Read),
            ("ReadStream", Role::Read),
            ("WriteCache", Role::Write),
            ("UpdateCache", Role::Write),
            ("DeleteCache", Role::Write),
            ("BatchWrite", Role::Write),
            ("WriteStream", Role::Write),
            ("ClusterStatus", Role::Admin),
        ];
        for (method, role) in cases {
            assert_eq!(required(&format!("/opticache.v1.OptiCache/{method}")), Access::Needs(role), "{method}");
        }
    }

    #[test]
    fn probes_are_open_and_internal_services_need_the_cluster_credential() {
        assert_eq!(required("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(required("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Access::Open);
        assert_eq!(required("/opticache.node.v1.Node/Put"), Access::Needs(Role::Cluster));
        assert_eq!(required("/opticache.coordinator.v1.Peer/Exchange"), Access::Needs(Role::Cluster));
        assert_eq!(required("/some.new.Service/Call"), Access::Needs(Role::Cluster));
        // A prefix trick does not open a service.
        assert_eq!(required("/grpc.health.v1.HealthX/Check"), Access::Needs(Role::Cluster));
    }
}
