//! Data sources. Today: OPC UA client subscriptions ([`opcua`]).

pub mod opcua;
