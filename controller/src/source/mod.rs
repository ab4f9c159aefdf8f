//! Where documents come from: a directory of YAML files ([`files`]) or Kubernetes
//! (`detour_kube`: CRDs, and each member cluster's Services and EndpointSlices). Both feed
//! the same [`detour_core::index::Index`] and start the same way ([`Source::start`]): each
//! publishes models and says when it has listed everything; files also report each load.

pub mod files;

use crate::metrics::Metrics;
use detour_core::model::{Catalogue, Model};
use detour_core::report::ConfigState;
use detour_core::validate::Policy;
use detour_kube::run::{KubeOptions, KubeSource};
use files::FileSource;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span};

/// Where the documents come from.
pub enum Source {
    /// A directory of YAML files, polled every `reload_interval`, validated under
    /// `policy`.
    Files { config: PathBuf, policy: Policy },
    /// CRDs and member clusters' Services, watched.
    Kubernetes(KubeOptions),
}

/// What every source feeds.
pub struct SourceFeeds {
    pub models: watch::Sender<Arc<Model>>,
    /// Every service of each member cluster where the model holds only those a scheme
    /// names (Kubernetes); files leave it empty, their model lists every service.
    pub catalogue: watch::Sender<Arc<Catalogue>>,
    /// True once everything was listed (files: at the first load).
    pub ready: watch::Sender<bool>,
    /// The outcome of each load (files; Kubernetes reports on each object instead).
    pub config: watch::Sender<Option<ConfigState>>,
}

/// A started source. Kubernetes hands over what its leader-elected writers need.
pub enum Started {
    Files,
    Kubernetes(Box<KubeSource>),
}

impl Source {
    /// `files` or `kubernetes`, as the status API says.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Files { .. } => "files",
            Source::Kubernetes(_) => "kubernetes",
        }
    }

    /// Starts feeding `feeds`. Files: the first load happens now, and an invalid
    /// configuration stops the start with every problem.
    pub async fn start(
        self,
        feeds: SourceFeeds,
        reload_interval: Duration,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Started> {
        match self {
            Source::Files { config, policy } => {
                let mut source = FileSource::new(config.clone(), metrics.clone(), policy)
                    .with_reports(feeds.config);
                let model = source.load().map_err(|problems| {
                    anyhow::anyhow!(
                        "{}\nthe configuration in {} is invalid ({} problem(s))",
                        detour_core::docs::Problems(problems.clone()),
                        config.display(),
                        problems.len()
                    )
                })?;
                info!(
                    config = %config.display(),
                    clusters = model.clusters.len(),
                    schemes = model.schemes.len(),
                    "configuration loaded"
                );
                feeds.models.send_replace(Arc::new(model));
                feeds.ready.send_replace(true);
                tokio::spawn(
                    source
                        .watch(feeds.models, reload_interval)
                        .instrument(info_span!("file_source", dir = %config.display())),
                );
                Ok(Started::Files)
            }
            Source::Kubernetes(opts) => {
                let source = KubeSource::start(
                    opts,
                    feeds.models,
                    feeds.catalogue,
                    feeds.ready,
                    Arc::new(metrics.kube.clone()),
                )
                .await
                .map_err(|e| e.context("starting the Kubernetes source"))?;
                Ok(Started::Kubernetes(Box::new(source)))
            }
        }
    }
}
