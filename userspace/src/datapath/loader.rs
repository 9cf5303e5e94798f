//! The loaded datapath: the embedded eBPF object with its maps opened from
//! (or created at) their pins, opened once by the engine. Programs are
//! loaded and pinned when the model first needs them and unpinned when it
//! no longer does; pinned programs, maps and links outlive every weft
//! process, so the datapath keeps forwarding without one.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, ProgramArray},
    programs::{ProgramInfo, SchedClassifier},
};
use weft_common::maps::MAP_TAILS;

use crate::{
    datapath::{
        maps::MapSet,
        migrate::{self, TAILS},
        object::ebpf_object,
        paths::Paths,
        pins::remove_pin,
    },
    error::{Error, Result},
};

/// The loaded object, with the pinned maps.
pub struct Datapath {
    ebpf: Ebpf,
    paths: Paths,
}

impl Datapath {
    /// Loads the embedded object, reusing pinned maps or creating and
    /// pinning them (mounting bpffs first if needed). Pinned maps whose
    /// layout changed are migrated first (or refused, changing nothing),
    /// and programs still on replaced maps or from another build are
    /// reloaded (see [`migrate`]); the report says what was done.
    pub fn open(paths: &Paths) -> Result<(Self, migrate::Report)> {
        paths.prepare_bpffs()?;
        let plan = migrate::plan(paths)?;
        let mut report = migrate::Report {
            migrated: migrate::migrate_maps(paths, &plan)?,
            ..Default::default()
        };
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(paths.maps_dir())
            .load(ebpf_object())
            .map_err(|e| Error::Ebpf {
                what: format!(
                    "cannot load the datapath with maps pinned in {}",
                    paths.maps_dir().display()
                ),
                source: Box::new(e),
            })?;
        if let Some(why) = migrate::stale_programs(paths)? {
            log::warn!("reloading the pinned programs: {why}");
            migrate::refresh_programs(&mut ebpf, paths, &mut report)?;
        }
        migrate::record(paths)?;
        Ok((
            Self {
                ebpf,
                paths: paths.clone(),
            },
            report,
        ))
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Whether TC program `name` is pinned.
    pub fn program_pinned(&self, name: &str) -> bool {
        self.paths.prog_pin(name).exists()
    }

    /// Loads and pins TC program `name` unless it is pinned; a tail-call
    /// target also goes into `WEFT_TAILS`.
    pub fn pin_program(&mut self, name: &str) -> Result<()> {
        let pin = self.paths.prog_pin(name);
        if pin.exists() {
            return Ok(());
        }
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the embedded eBPF object has no program {name}; rebuild weft"
                ))
            })?
            .try_into()
            .map_err(|e| Error::program(format!("{name} is not a TC program"), e))?;
        // A program unpinned earlier in this process is still loaded.
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| Error::program(format!("the kernel rejected {name}"), e))?;
        }
        prog.pin(&pin)
            .map_err(|e| Error::pin(format!("cannot pin {name} at {}", pin.display()), e))?;
        migrate::record_program(&self.paths, name)?;
        if let Some((_, slot)) = TAILS.iter().find(|(tail, _)| *tail == name) {
            let fd = SchedClassifier::from_pin(&pin)
                .and_then(|p| p.fd().and_then(|fd| fd.try_clone().map_err(Into::into)))
                .map_err(|e| Error::program(format!("cannot use {name}'s fd"), e))?;
            ProgramArray::try_from(MapSet::map_mut(&mut self.ebpf, MAP_TAILS)?)
                .and_then(|mut tails| tails.set(*slot, &fd, 0))
                .map_err(|e| Error::map(format!("cannot install {name} in {MAP_TAILS}"), e))?;
        }
        Ok(())
    }

    /// Unpins TC program `name` (links still attached keep it alive) and
    /// drops its record; a tail-call target leaves `WEFT_TAILS` first.
    pub fn unpin_program(&mut self, name: &str) -> Result<()> {
        let pin = self.paths.prog_pin(name);
        if !pin.exists() {
            return Ok(());
        }
        if let Some((_, slot)) = TAILS.iter().find(|(tail, _)| *tail == name) {
            let mut tails = ProgramArray::try_from(MapSet::map_mut(&mut self.ebpf, MAP_TAILS)?)
                .map_err(|e| Error::map(format!("map {MAP_TAILS} has an unexpected type"), e))?;
            crate::datapath::maps::absent_ok(tails.clear_index(slot))
                .map_err(|e| Error::map(format!("cannot remove {name} from {MAP_TAILS}"), e))?;
        }
        remove_pin(&pin)?;
        migrate::forget_program(&self.paths, name)
    }

    /// The kernel id of pinned program `name`.
    pub fn program_id(paths: &Paths, name: &str) -> Option<u32> {
        ProgramInfo::from_pin(paths.prog_pin(name))
            .ok()
            .map(|info| info.id())
    }
}

impl MapSet for Datapath {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
        MapSet::map_mut(&mut self.ebpf, name)
    }
}
