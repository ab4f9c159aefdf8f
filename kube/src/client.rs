//! Kubernetes clients: the controller's own (in-cluster config, or `KUBECONFIG` when run
//! outside a cluster) and one per member cluster from the kubeconfig in its Secret.
//!
//! A member's kubeconfig may carry its credentials inline only. `exec` and auth-provider
//! plugins would run commands inside the controller, and file paths would read the
//! controller's own files (its service account token, for one): whoever may write a
//! Secret in detour's namespace must not gain either.

use super::Error;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The client of the cluster the controller runs in.
pub async fn local() -> Result<Client, Error> {
    Ok(Client::try_default().await?)
}

/// A client for member cluster `cluster` from a kubeconfig's text.
pub async fn from_kubeconfig(cluster: &str, text: &str) -> Result<Client, Error> {
    let refuse = |why: String| Error::Kubeconfig {
        cluster: cluster.to_string(),
        why,
    };
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| refuse(e.to_string()))?;
    check_inline(&kubeconfig).map_err(refuse)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| refuse(e.to_string()))?;
    Client::try_from(config).map_err(|e| refuse(e.to_string()))
}

/// Refuses what would make the controller run commands or read its own files.
pub fn check_inline(kubeconfig: &Kubeconfig) -> Result<(), String> {
    for named in &kubeconfig.auth_infos {
        let Some(user) = &named.auth_info else {
            continue;
        };
        let user_name = &named.name;
        if user.exec.is_some() || user.auth_provider.is_some() {
            return Err(format!(
                "user {user_name:?}: exec and auth-provider plugins are not allowed; use a token or a client certificate"
            ));
        }
        if user.token_file.is_some()
            || user.client_certificate.is_some()
            || user.client_key.is_some()
        {
            return Err(format!(
                "user {user_name:?}: credentials must be inline (token, client-certificate-data, client-key-data), not file paths"
            ));
        }
    }
    for named in &kubeconfig.clusters {
        if named
            .cluster
            .as_ref()
            .is_some_and(|c| c.certificate_authority.is_some())
        {
            return Err(format!(
                "cluster {:?}: certificate-authority must be inline (certificate-authority-data)",
                named.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INLINE: &str = "apiVersion: v1
kind: Config
clusters:
- name: west
  cluster: {server: 'https://west.example:6443', certificate-authority-data: Zm9v}
users:
- name: detour
  user: {token: abc}
contexts:
- name: west
  context: {cluster: west, user: detour}
current-context: west
";

    #[test]
    fn inline_credentials_only() {
        let ok = Kubeconfig::from_yaml(INLINE).unwrap();
        assert_eq!(check_inline(&ok), Ok(()));
        let exec = INLINE.replace(
            "user: {token: abc}",
            "user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}}",
        );
        let e = check_inline(&Kubeconfig::from_yaml(&exec).unwrap()).unwrap_err();
        assert!(
            e.contains("exec and auth-provider plugins are not allowed"),
            "{e}"
        );
        let file = INLINE.replace(
            "user: {token: abc}",
            "user: {tokenFile: /var/run/secrets/token}",
        );
        let e = check_inline(&Kubeconfig::from_yaml(&file).unwrap()).unwrap_err();
        assert!(e.contains("must be inline"), "{e}");
        let ca = INLINE.replace(
            "certificate-authority-data: Zm9v",
            "certificate-authority: /etc/ca.crt",
        );
        assert!(check_inline(&Kubeconfig::from_yaml(&ca).unwrap()).is_err());
    }

    #[tokio::test]
    async fn a_member_client_is_built_from_an_inline_kubeconfig() {
        let text = INLINE.replace("certificate-authority-data: Zm9v, ", "");
        assert!(from_kubeconfig("west", &text).await.is_ok());
        let Err(e) = from_kubeconfig("west", "not: [a kubeconfig").await else {
            panic!("not a kubeconfig, yet accepted");
        };
        assert!(
            e.to_string()
                .starts_with("kubeconfig of member cluster west:"),
            "{e}"
        );
    }
}
