//! Attaching the loaded classifier to interfaces, and keeping the attachments in step with the
//! links of the namespace: pods come and go on a node, so interface patterns (`veth*`) are
//! re-resolved by [`Capture::refresh`], attaching to new matching links and forgetting vanished
//! ones.

use std::collections::BTreeSet;

use aya::{
    programs::{
        TcAttachType,
        tc::{self, SchedClassifierLinkId},
    },
    util::KernelVersion,
};
use mirror_common::CLASSIFIER_PROGRAM;
use tracing::{debug, info, warn};

use super::{
    CaptureConfig, CaptureError, Classifier, KernelCounters, RingReader,
    interfaces::{self, Interface},
};

/// One attachment of the classifier.
#[derive(Debug)]
struct Attachment {
    interface: Interface,
    attach_type: TcAttachType,
    link: SchedClassifierLinkId,
}

fn direction_name(attach_type: TcAttachType) -> &'static str {
    match attach_type {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom",
    }
}

fn uses_tcx() -> bool {
    KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 6, 0))
}

/// Hooks for an interface: ingress and egress; egress only on loopback, where every packet
/// passes both hooks and only egress still carries the sending socket.
fn attach_types(interface: &Interface) -> &'static [TcAttachType] {
    if interface.is_loopback() {
        &[TcAttachType::Egress]
    } else {
        &[TcAttachType::Ingress, TcAttachType::Egress]
    }
}

/// What [`Capture::refresh`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkChanges {
    pub attached: Vec<String>,
    pub forgotten: Vec<String>,
}

/// A loaded classifier attached to interfaces. Dropping it detaches every link (aya owns them).
#[derive(Debug)]
pub struct Capture {
    classifier: Classifier,
    specs: Vec<String>,
    attachments: Vec<Attachment>,
    tcx: bool,
}

impl Capture {
    /// Loads the classifier, fills the port map and attaches to every selected interface of the
    /// calling thread's network namespace. Exact names must exist; a pattern may match nothing
    /// yet (a node without pods) and is followed by [`Capture::refresh`].
    pub fn start(config: &CaptureConfig) -> Result<Self, CaptureError> {
        Self::start_configured(config, |_| Ok(()))
    }

    /// [`Capture::start`], with `configure` applied to the loaded classifier before it is
    /// attached anywhere: per-port sampling and address scopes are in force from the first
    /// packet (a scoped port loaded unscoped would record every address until scoped).
    pub fn start_configured(
        config: &CaptureConfig,
        configure: impl FnOnce(&mut Classifier) -> Result<(), CaptureError>,
    ) -> Result<Self, CaptureError> {
        let (selected, unmatched) =
            interfaces::resolve(&config.interfaces, &interfaces::list_interfaces()?)?;
        for pattern in unmatched {
            warn!(%pattern, "no link matches the pattern yet; it will be attached when one appears");
        }
        let mut classifier = Classifier::load(&config.ports, config.ring_buffer_bytes)?;
        configure(&mut classifier)?;
        let mut capture = Self {
            classifier,
            specs: config.interfaces.clone(),
            attachments: Vec::new(),
            tcx: uses_tcx(),
        };
        for interface in selected {
            capture.attach(&interface)?;
        }
        Ok(capture)
    }

    fn attach(&mut self, interface: &Interface) -> Result<(), CaptureError> {
        let types = attach_types(interface);
        if !self.tcx {
            prepare_netlink(interface, types);
        }
        let program = self.classifier.program_mut()?;
        for attach_type in types {
            let link = program
                .attach(&interface.name, *attach_type)
                .map_err(|source| CaptureError::Attach {
                    interface: interface.name.clone(),
                    direction: direction_name(*attach_type),
                    source,
                })?;
            info!(
                interface = %interface.name,
                direction = direction_name(*attach_type),
                mode = if self.tcx { "tcx" } else { "netlink" },
                "classifier attached"
            );
            self.attachments.push(Attachment {
                interface: interface.clone(),
                attach_type: *attach_type,
                link,
            });
        }
        Ok(())
    }

    /// Re-resolves the interface patterns: attaches to links that appeared and forgets links
    /// that vanished (the kernel already removed their hooks with the device). A link that
    /// cannot be attached is logged and retried on the next refresh.
    pub fn refresh(&mut self) -> Result<LinkChanges, CaptureError> {
        let available = interfaces::list_interfaces()?;
        let present: BTreeSet<&Interface> = available.iter().collect();
        let mut changes = LinkChanges::default();
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.attachments)
            .into_iter()
            .partition(|attachment| !present.contains(&attachment.interface));
        self.attachments = kept;
        if !gone.is_empty() {
            let program = self.classifier.program_mut()?;
            for attachment in gone {
                if !changes.forgotten.contains(&attachment.interface.name) {
                    changes.forgotten.push(attachment.interface.name.clone());
                }
                if let Err(error) = program.detach(attachment.link) {
                    debug!(interface = %attachment.interface.name, %error, "link already gone");
                }
            }
        }
        let (selected, _) = interfaces::resolve_lenient(&self.specs, &available);
        for interface in selected {
            if self
                .attachments
                .iter()
                .any(|attachment| attachment.interface == interface)
            {
                continue;
            }
            match self.attach(&interface) {
                Ok(()) => changes.attached.push(interface.name.clone()),
                Err(error) => warn!(interface = %interface.name, %error, "attaching a new link"),
            }
        }
        for name in &changes.forgotten {
            info!(interface = %name, "link vanished; forgotten");
        }
        Ok(changes)
    }

    /// The interfaces the classifier is attached to.
    pub fn interfaces(&self) -> Vec<Interface> {
        let mut interfaces: Vec<_> = self
            .attachments
            .iter()
            .map(|attachment| attachment.interface.clone())
            .collect();
        interfaces.dedup();
        interfaces
    }

    /// The loaded classifier (reader, counters, program statistics, ports).
    pub fn classifier(&mut self) -> &mut Classifier {
        &mut self.classifier
    }

    /// Takes the ring-buffer reader (once); see [`Classifier::take_reader`].
    pub fn take_reader(&mut self) -> Result<Option<RingReader>, CaptureError> {
        self.classifier.take_reader()
    }

    /// Reads the classifier's per-CPU counters and sums them.
    pub fn counters(&self) -> Result<KernelCounters, CaptureError> {
        self.classifier.counters()
    }

    /// Detaches every link now, logging each (dropping the capture does the same, silently).
    pub fn detach(mut self) {
        let attachments = std::mem::take(&mut self.attachments);
        let Ok(program) = self.classifier.program_mut() else {
            return;
        };
        for attachment in attachments {
            let direction = direction_name(attachment.attach_type);
            let interface = &attachment.interface.name;
            match program.detach(attachment.link) {
                Ok(()) => info!(%interface, direction, "classifier detached"),
                Err(error) => {
                    warn!(%interface, direction, %error, "detaching the classifier failed");
                }
            }
        }
    }
}

/// Netlink (pre-TCX) attachment needs a clsact qdisc and must not stack on a filter that a
/// killed earlier run left behind.
fn prepare_netlink(interface: &Interface, attach_types: &[TcAttachType]) {
    if let Err(error) = tc::qdisc_add_clsact(&interface.name) {
        // Usually "exists"; a real failure surfaces at attach time with its own error.
        debug!(interface = %interface.name, %error, "adding clsact qdisc");
    }
    for attach_type in attach_types {
        match tc::qdisc_detach_program(&interface.name, *attach_type, CLASSIFIER_PROGRAM) {
            Ok(()) => warn!(
                interface = %interface.name,
                direction = direction_name(*attach_type),
                "removed a stale {CLASSIFIER_PROGRAM} filter left by an earlier run"
            ),
            Err(error) => debug!(interface = %interface.name, %error, "no stale filter removed"),
        }
    }
}
