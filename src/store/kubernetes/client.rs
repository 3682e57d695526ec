//! The API client for a Secret target: the target's kubeconfig, else `KUBECONFIG`, else the
//! in-cluster service account; verification always on (a kubeconfig that turns it off is
//! refused), timeouts, a response size limit.

use super::*;

/// Builds an API client: `kubeconfig` from the target, else `KUBECONFIG`, else the
/// in-cluster service account. Returns the client and the namespace to use.
pub(super) async fn connect(
    cfg: &KubernetesSecretTarget,
) -> Result<(kube::Client, String, String), KubeError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let client_err = |place: String, message: String| KubeError::Client { place, message };
    let (config, source) = match (&cfg.kubeconfig, std::env::var_os("KUBECONFIG")) {
        (Some(path), _) => {
            let place = path.display().to_string();
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| client_err(place.clone(), e.to_string()))?;
            let c = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| client_err(place.clone(), e.to_string()))?;
            (c, place)
        }
        (None, Some(env)) => {
            let place = format!("KUBECONFIG={}", env.to_string_lossy());
            let c = kube::Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|e| client_err(place.clone(), e.to_string()))?;
            (c, place)
        }
        (None, None) => {
            let place = "in-cluster service account".to_string();
            let c = kube::Config::incluster().map_err(|e| {
                client_err(
                    place.clone(),
                    format!(
                        "{e} (outside a cluster, set `kubeconfig` in the target or KUBECONFIG)"
                    ),
                )
            })?;
            (c, place)
        }
    };
    let mut config = config;
    if config.accept_invalid_certs {
        return Err(client_err(
            source,
            "the kubeconfig turns off server certificate verification (insecure-skip-tls-verify); certrot always verifies: give the cluster's CA instead".into(),
        ));
    }
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    config.write_timeout = Some(std::time::Duration::from_secs(30));
    let namespace = cfg
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let url = config.cluster_url.to_string();
    let limit =
        tower::util::MapResponseLayer::new(|r: http::Response<Box<kube::client::DynBody>>| {
            r.map(|b| http_body_util::Limited::new(b, MAX_RESPONSE_BYTES))
        });
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| client_err(url.clone(), e.to_string()))?
        .with_layer(&limit)
        .build();
    Ok((client, namespace, url))
}
