//! A free TCP port for launching ranks on this machine (the rendezvous' MASTER_PORT).

use std::net::{Ipv4Addr, TcpListener};

use crate::error::{Error, Result};

/// A port on 127.0.0.1 that the system reports free: bound to port 0, read back, and released.
/// Another process may take it before rank 0's store binds it; launchers that see the store
/// fail to bind simply try again with a new port.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::Internal(format!("binding 127.0.0.1:0 to find a free port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("reading the port bound on 127.0.0.1: {e}")))?
        .port();
    Ok(port)
}
