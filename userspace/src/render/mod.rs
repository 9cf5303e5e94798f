//! Render: the model to the kernel state it describes. Pure functions, so
//! what the kernel must hold is computed the same way for a change, for
//! its rollback, for drift repair and for the packet tables.

pub mod maglev;
pub mod maps;
pub mod net;

use crate::model::Model;

/// The kernel state a model describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub maps: maps::DesiredMaps,
    pub net: net::DesiredNet,
}

/// What `model` (with `synthetic` benchmark endpoints) renders to.
pub fn render(model: &Model, synthetic: &maps::Synthetic) -> Desired {
    Desired {
        maps: maps::render(model, synthetic),
        net: net::render(model),
    }
}
