//! A shard's PostgreSQL URL through a [`TcpProxy`], so a test can cut one
//! service off from one shard without touching the server others use.

use std::net::SocketAddr;

use crate::TestEnv;
use crate::rewire::rewired;
use crate::tcp_proxy::TcpProxy;

/// `postgres://user:pass@host:port/db` with host:port replaced by `addr`.
pub fn through(url: &str, addr: SocketAddr) -> anyhow::Result<String> {
    let at = url
        .rfind('@')
        .map_or(url.find("://").map(|i| i + 3), |i| Some(i + 1));
    let at = at.ok_or_else(|| anyhow::anyhow!("no host in {url}"))?;
    let slash = url[at..].find('/').map(|i| at + i).unwrap_or(url.len());
    Ok(format!("{}{addr}{}", &url[..at], &url[slash..]))
}

/// `postgres://…@host:port/…` → the address of host:port.
pub fn backend(url: &str) -> anyhow::Result<SocketAddr> {
    let at = url
        .rfind('@')
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?
        + 1;
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    let host = url[at..end].replace("localhost", "127.0.0.1");
    Ok(host.parse()?)
}

/// A proxy in front of `url`'s server, and `url` through it.
pub async fn proxied(url: &str) -> anyhow::Result<(TcpProxy, String)> {
    let proxy = TcpProxy::start(backend(url)?).await?;
    let url = through(url, proxy.addr)?;
    Ok((proxy, url))
}

/// `env` as a service sees it when shard `shard` is reached through a proxy
/// the test can cut; the test's own connections stay direct.
pub async fn shard_through_proxy(
    env: &TestEnv,
    shard: usize,
) -> anyhow::Result<(TcpProxy, TestEnv)> {
    let (proxy, url) = proxied(&env.stack.database_urls[shard]).await?;
    let rewired = rewired(env, |stack| stack.database_urls[shard] = url);
    Ok((proxy, rewired))
}
