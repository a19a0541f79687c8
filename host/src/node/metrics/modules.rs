//! Each function's versions as metrics, read from its [`LiveModule`] at
//! each scrape.

use super::{FunctionLabel, Modules};
use crate::{node::live::LiveModule, shared::lock::lock};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};
use std::sync::Arc;

/// Each function's swaps, failed reloads and current version, read at
/// each scrape.
#[derive(Debug)]
pub(super) struct ModuleCollector {
    pub(super) modules: Arc<Modules>,
}

impl Collector for ModuleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let modules: Vec<Arc<LiveModule>> = lock(&self.modules).values().cloned().collect();
        let label = |live: &LiveModule| FunctionLabel {
            function: live.current().name().to_owned(),
        };
        for (name, help, value) in [
            (
                "module_swaps",
                "New versions of the module swapped in",
                LiveModule::swaps as fn(&LiveModule) -> u64,
            ),
            (
                "module_reload_failures",
                "Versions of the module file that could not be served",
                LiveModule::failed_reloads,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0_u64).metric_type(),
            )?;
            for live in &modules {
                ConstCounter::new(value(live)).encode(metric.encode_family(&label(live))?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "module_info",
            "The module version each function serves (always 1)",
            None,
            ConstGauge::new(1_i64).metric_type(),
        )?;
        for live in &modules {
            let module = live.current();
            let labels = [
                ("function", module.name().to_owned()),
                ("digest", module.digest().to_owned()),
            ];
            ConstGauge::new(1_i64).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
