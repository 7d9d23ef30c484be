//! Turning a logical URL (`http://users/v1/me`) into one for a picked endpoint.

use lb_core::Address;
use reqwest::Url;

use crate::Error;

/// Reads `target` as a URL of the service `service`: either a path
/// (`/v1/me`, joined to `scheme://service`) or a full URL whose host is the
/// service name.
pub(crate) fn logical_url(scheme: &str, service: &str, target: &str) -> Result<Url, Error> {
    let bad = |reason: &str| Error::BadUrl { url: target.to_string(), reason: reason.to_string() };
    let url = if target.starts_with('/') {
        Url::parse(&format!("{scheme}://{service}{target}")).map_err(|e| bad(&e.to_string()))?
    } else {
        Url::parse(target).map_err(|e| bad(&e.to_string()))?
    };
    if url.host_str() != Some(service) {
        return Err(bad(&format!("the host must be the service name `{service}`")));
    }
    Ok(url)
}

/// Points `url` at `address`, keeping scheme, path and query.
pub(crate) fn point_at(url: &mut Url, address: &Address) -> Result<(), Error> {
    let bad =
        |url: &Url| Error::BadUrl { url: url.to_string(), reason: format!("cannot address `{address}`") };
    let ok = match address {
        Address::Socket(socket) => {
            url.set_ip_host(socket.ip()).is_ok() && url.set_port(Some(socket.port())).is_ok()
        }
        Address::Host { host, port } => url.set_host(Some(host)).is_ok() && url.set_port(Some(*port)).is_ok(),
    };
    if ok { Ok(()) } else { Err(bad(url)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_logical_urls_are_accepted() {
        let url = logical_url("http", "users", "/v1/me?x=1").unwrap();
        assert_eq!(url.as_str(), "http://users/v1/me?x=1");
        assert_eq!(logical_url("http", "users", "http://users/v1/me").unwrap().path(), "/v1/me");
    }

    #[test]
    fn another_host_is_refused_with_a_reason() {
        let err = logical_url("http", "users", "http://orders/v1").unwrap_err();
        assert!(err.to_string().contains("service name `users`"), "{err}");
        assert!(logical_url("http", "users", "not a url").is_err());
    }

    #[test]
    fn endpoints_replace_host_and_port() {
        let mut url = logical_url("http", "users", "/v1/me").unwrap();
        point_at(&mut url, &"10.0.0.7:8080".parse().unwrap()).unwrap();
        assert_eq!(url.as_str(), "http://10.0.0.7:8080/v1/me");
        point_at(&mut url, &"users-2.internal:9000".parse().unwrap()).unwrap();
        assert_eq!(url.as_str(), "http://users-2.internal:9000/v1/me");
        point_at(&mut url, &"[::1]:81".parse().unwrap()).unwrap();
        assert_eq!(url.as_str(), "http://[::1]:81/v1/me");
    }
}
