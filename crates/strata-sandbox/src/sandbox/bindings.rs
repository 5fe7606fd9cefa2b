//! `ownership: Borrowing` lets the facts handed to a guest be lowered
//! straight from the host's values, without a deep copy per call. The
//! shared `types` and `host` interfaces are generated once, from a
//! host-only world that uses every type (bindgen cannot generate a
//! borrowed type that its world does not use), and the four policy
//! worlds refer to them with `with`.

pub mod shared {
    wasmtime::component::bindgen!({
        path: "../../wit",
        inline: "
            package strata:host-bindings;
            world every-type {
                import strata:policy/host@0.1.0;
                use strata:policy/types@0.1.0.{dataset-info, partitions, column};
                use strata:policy/types@0.1.0.{retention-answer, tiering-answer, archival-answer, batch-keys};
                export every-type: func(dataset: dataset-info, partitions: partitions, columns: list<column>)
                    -> tuple<retention-answer, tiering-answer, archival-answer, batch-keys>;
            }
        ",
        world: "every-type",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}
pub mod retention {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "retention",
        ownership: Borrowing { duplicate_if_necessary: false },
        with: {
            "strata:policy/types": super::shared::strata::policy::types,
            "strata:policy/host": super::shared::strata::policy::host,
        },
    });
}
pub mod tiering {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "tiering",
        ownership: Borrowing { duplicate_if_necessary: false },
        with: {
            "strata:policy/types": super::shared::strata::policy::types,
            "strata:policy/host": super::shared::strata::policy::host,
        },
    });
}
pub mod archival {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "archival",
        ownership: Borrowing { duplicate_if_necessary: false },
        with: {
            "strata:policy/types": super::shared::strata::policy::types,
            "strata:policy/host": super::shared::strata::policy::host,
        },
    });
}
pub mod partitioner {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "partitioner",
        ownership: Borrowing { duplicate_if_necessary: false },
        with: {
            "strata:policy/types": super::shared::strata::policy::types,
            "strata:policy/host": super::shared::strata::policy::host,
        },
    });
}
