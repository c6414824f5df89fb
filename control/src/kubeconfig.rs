//! The kubeconfig `berth server` writes for its API URL, so `kubectl --kubeconfig FILE` works
//! with no further set-up.

use std::path::Path;

/// A kubeconfig with one cluster, context and (anonymous) user named `berth`.
pub fn render(server_url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server_url}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: berth\n    namespace: default\ncurrent-context: berth\nusers:\n- name: berth\n  user: {{}}\npreferences: {{}}\n"
    )
}

/// The URL clients should use for a listen URL: a wildcard address is reached on loopback.
pub fn client_url(listen_url: &str) -> String {
    listen_url.replace("://0.0.0.0", "://127.0.0.1").replace("://[::]", "://[::1]").trim_end_matches('/').to_string()
}

/// Writes the file atomically (temp file + rename), so a reader never sees half of it.
pub fn write(path: &Path, server_url: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, render(server_url))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_names_the_server() {
        let text = render("http://127.0.0.1:6443");
        assert!(text.contains("server: http://127.0.0.1:6443\n"));
        assert!(text.contains("current-context: berth\n"));
        assert_eq!(client_url("http://0.0.0.0:6443/"), "http://127.0.0.1:6443");
    }
}
