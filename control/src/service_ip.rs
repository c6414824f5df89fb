//! Service cluster IPs, pure: which address a new Service asks for, candidates from the service
//! range, and the reservation that makes an address taken.
//!
//! Every allocated address is a key `/registry/ipaddresses/<ip>` (the model of Kubernetes'
//! `networking.k8s.io/v1` IPAddress objects), created in the same store transaction as the
//! Service and deleted with it. The store's create-if-absent makes two Services — on any replica,
//! at the same time — unable to hold one address.

use crate::error::{ApiError, Cause};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// Kubernetes' default service range (`--service-cluster-ip-range`).
pub const RANGE: &str = "10.96.0.0/12";
const BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SIZE: u32 = 1 << 20;
/// Attempts at a random free address before giving up (the range holds a million).
pub const ATTEMPTS: usize = 32;

/// What a Service asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Headless (`clusterIP: None`) or ExternalName: no address.
    Nothing,
    /// Any free address.
    Any,
    /// This one.
    Exact(Ipv4Addr),
}

/// Reads the request from a Service about to be created. A malformed address is left to
/// validation (`spec.clusterIP` must be an IP), which reports it as a field error.
pub fn request(service: &Value) -> Request {
    if service.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return Request::Nothing;
    }
    match service.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("") {
        "" => Request::Any,
        "None" => Request::Nothing,
        ip => ip.parse().map(Request::Exact).unwrap_or(Request::Nothing),
    }
}

/// An address of the range from random bits: never the network address, nor the first
/// address (kept for the `kubernetes` Service, as Kubernetes does), nor the broadcast one.
pub fn candidate(random: [u8; 4]) -> Ipv4Addr {
    let offset = 2 + u32::from_be_bytes(random) % (SIZE - 3);
    Ipv4Addr::from(BASE + offset)
}

pub fn in_range(ip: Ipv4Addr) -> bool {
    u32::from(ip).wrapping_sub(BASE) < SIZE
}

/// The store key that reserves `ip`.
pub fn key(ip: Ipv4Addr) -> String {
    format!("/registry/ipaddresses/{ip}")
}

/// The reservation's value: who holds the address.
pub fn reservation(ip: Ipv4Addr, namespace: &str, name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {"name": ip.to_string()},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": namespace, "name": name, "uid": uid}},
    })
}

/// The address a stored Service holds, if it holds one.
pub fn held(service: &Value) -> Option<Ipv4Addr> {
    service.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|ip| ip.parse().ok())
}

/// Kubernetes' 422 for an address that cannot be allocated.
fn failed(service: &str, ip: Ipv4Addr, why: &str) -> ApiError {
    // field.Invalid renders a []string value with Go's %#v.
    let cause = Cause {
        reason: "FieldValueInvalid",
        field: "spec.clusterIPs".into(),
        message: format!("Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: {why}"),
    };
    ApiError::invalid("", "Service", service, vec![cause])
}

pub fn already_allocated(service: &str, ip: Ipv4Addr) -> ApiError {
    failed(service, ip, "provided IP is already allocated")
}

pub fn not_in_range(service: &str, ip: Ipv4Addr) -> ApiError {
    failed(service, ip, &format!("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {RANGE}"))
}

pub fn range_full() -> ApiError {
    ApiError::internal("failed to allocate a serviceIP: range is full")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_stay_in_the_range_and_skip_reserved_addresses() {
        for random in [[0, 0, 0, 0], [255, 255, 255, 255], [0, 15, 255, 253], [1, 2, 3, 4]] {
            let ip = candidate(random);
            assert!(in_range(ip), "{ip}");
            assert!(![Ipv4Addr::new(10, 96, 0, 0), Ipv4Addr::new(10, 96, 0, 1), Ipv4Addr::new(10, 111, 255, 255)]
                .contains(&ip));
        }
        assert_eq!(candidate([0, 0, 0, 0]), Ipv4Addr::new(10, 96, 0, 2));
        assert!(!in_range(Ipv4Addr::new(10, 112, 0, 0)) && !in_range(Ipv4Addr::new(10, 95, 255, 255)));
    }

    #[test]
    fn requests() {
        assert_eq!(request(&json!({"spec": {}})), Request::Any);
        assert_eq!(request(&json!({"spec": {"clusterIP": ""}})), Request::Any);
        assert_eq!(request(&json!({"spec": {"clusterIP": "None"}})), Request::Nothing);
        assert_eq!(request(&json!({"spec": {"type": "ExternalName", "externalName": "x"}})), Request::Nothing);
        assert_eq!(
            request(&json!({"spec": {"clusterIP": "10.96.0.10"}})),
            Request::Exact(Ipv4Addr::new(10, 96, 0, 10))
        );
    }

    #[test]
    fn errors_read_like_kubernetes() {
        let e = already_allocated("web", Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(
            e.message,
            "Service \"web\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"
        );
        assert!(not_in_range("web", Ipv4Addr::new(1, 2, 3, 4))
            .message
            .ends_with("The range of valid IPs is 10.96.0.0/12"));
    }
}
