//! The two lanes a record can arrive by. Vocabulary shared by the settings (each lane has its queue),
//! the broker side (each lane has its consumer and prefetch) and the workers (urgent work first).

/// Which queue a delivery came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The fast lane (`amqp.urgent_queue`): serious adverse events; always taken first.
    Urgent = 0,
    /// The work queue (`amqp.queue`): everything else.
    Normal = 1,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Urgent, Lane::Normal];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Urgent => "urgent",
            Lane::Normal => "normal",
        }
    }
}
