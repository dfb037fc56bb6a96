//! Rendering kubeconfig files, with the certificates embedded so a file can be copied.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One context of a kubeconfig: a cluster and the client certificate to reach it with.
#[derive(Clone)]
pub(crate) struct Context<'a> {
    /// Names the context, its cluster entry and (with `-user`) its user entry.
    pub(crate) name: &'a str,
    pub(crate) server: &'a str,
    pub(crate) ca_pem: &'a str,
    pub(crate) cert_pem: &'a str,
    pub(crate) key_pem: &'a str,
}

/// A kubeconfig with `contexts`, the first being current. Base64 text needs no YAML
/// quoting, and the names and URLs are made by the harness, so plain YAML is safe.
pub(crate) fn render(contexts: &[Context<'_>]) -> String {
    let mut clusters = String::new();
    let mut users = String::new();
    let mut entries = String::new();
    for c in contexts {
        let name = c.name;
        clusters.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n",
            c.server,
            STANDARD.encode(c.ca_pem)
        ));
        users.push_str(&format!(
            "- name: {name}-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            STANDARD.encode(c.cert_pem),
            STANDARD.encode(c.key_pem)
        ));
        entries.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n"
        ));
    }
    let current = contexts.first().map_or("", |c| c.name);
    format!(
        "apiVersion: v1\nkind: Config\npreferences: {{}}\ncurrent-context: {current}\n\
         clusters:\n{clusters}users:\n{users}contexts:\n{entries}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_context_per_cluster_with_embedded_certificates() {
        let contexts = [
            Context {
                name: "c0",
                server: "https://127.0.0.1:1000",
                ca_pem: "CA0",
                cert_pem: "CERT0",
                key_pem: "KEY0",
            },
            Context {
                name: "c1",
                server: "https://127.0.0.1:1001",
                ca_pem: "CA1",
                cert_pem: "CERT1",
                key_pem: "KEY1",
            },
        ];
        let text = render(&contexts);
        assert!(text.contains("current-context: c0\n"));
        assert!(text.contains("- name: c1\n  cluster:\n    server: https://127.0.0.1:1001\n"));
        assert!(text.contains(&format!("client-key-data: {}\n", STANDARD.encode("KEY1"))));
        assert!(text.contains("- name: c1\n  context:\n    cluster: c1\n    user: c1-admin\n"));
        assert_eq!(text.matches("certificate-authority-data").count(), 2);
    }
}
