//! The digest of what a policy was asked, a run's `input_sha256`: equal
//! inputs give equal digests, and any change to `now`, the dataset's schema
//! or any partition's facts gives another. Each field is fed to the hash in
//! a fixed order, texts length-prefixed, so no two inputs can run together.
//! Pure.

use sha2::{Digest, Sha256};

use crate::policy::facts::{DatasetFacts, PartitionFacts};

fn hash_text(hasher: &mut Sha256, text: &str) {
    hasher.update((text.len() as u64).to_le_bytes());
    hasher.update(text.as_bytes());
}

/// sha256 of what a policy was asked: `now`, the dataset and the digest of
/// every partition's facts ([`facts_digest`]), each field fed to the hash in
/// a fixed order (texts length-prefixed), so equal inputs give equal digests.
pub(super) fn input_digest(now: i64, dataset: &DatasetFacts, facts_sha256: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(now.to_le_bytes());
    for part in [&dataset.name, &dataset.period, &dataset.time_column] {
        hash_text(&mut hasher, part);
    }
    for (name, kind) in &dataset.columns {
        hash_text(&mut hasher, name);
        hash_text(&mut hasher, kind.as_str());
    }
    hasher.update(facts_sha256);
    hex::encode(hasher.finalize())
}

/// sha256 of the partitions' facts, field by field.
pub(super) fn facts_digest(facts: &[PartitionFacts]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((facts.len() as u64).to_le_bytes());
    for fact in facts {
        // The id names the dataset, period and key.
        hash_text(&mut hasher, &fact.id);
        let mut fixed = [0u8; 8 * 9 + 4 + 4];
        for (i, value) in [
            fact.period_start_ns,
            fact.period_end_ns,
            fact.rows as i64,
            fact.bytes as i64,
            fact.min_time_ns.unwrap_or(i64::MIN),
            fact.max_time_ns.unwrap_or(i64::MIN),
            fact.created_at_ns,
            fact.last_written_at_ns,
            i64::from(fact.min_time_ns.is_some()) | i64::from(fact.max_time_ns.is_some()) << 1,
        ]
        .into_iter()
        .enumerate()
        {
            fixed[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        fixed[72..76].copy_from_slice(&fact.file_count.to_le_bytes());
        fixed[76] = fact.tier as u8;
        fixed[77] = u8::from(fact.read_only);
        fixed[78] = u8::from(fact.archived);
        hasher.update(fixed);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnKind;
    use crate::tier::Tier;

    #[test]
    fn the_input_digest_changes_with_every_field_and_only_then() {
        let dataset = DatasetFacts {
            name: "cpu".into(),
            period: "day".into(),
            time_column: "time".into(),
            columns: vec![("time".into(), ColumnKind::Time), ("v".into(), ColumnKind::Float)],
        };
        let facts: Vec<PartitionFacts> =
            (0..3).map(|day| crate::lifecycle::guard::tests::partition(day, Tier::Hot)).collect();
        let digest = input_digest(5, &dataset, &facts_digest(&facts));
        assert_eq!(digest, input_digest(5, &dataset, &facts_digest(&facts.clone())), "equal inputs, equal digests");
        assert_ne!(digest, input_digest(6, &dataset, &facts_digest(&facts)), "now");
        let changes: [fn(&mut PartitionFacts); 9] = [
            |f| f.tier = Tier::Warm,
            |f| f.read_only = true,
            |f| f.rows += 1,
            |f| f.bytes += 1,
            |f| f.min_time_ns = None,
            |f| f.max_time_ns = Some(0),
            |f| f.file_count += 1,
            |f| f.archived = true,
            |f| f.id.push('x'),
        ];
        for change in changes {
            let mut changed = facts.clone();
            change(&mut changed[1]);
            assert_ne!(digest, input_digest(5, &dataset, &facts_digest(&changed)));
        }
        let mut other = dataset.clone();
        other.columns.push(("w".into(), ColumnKind::Integer));
        assert_ne!(digest, input_digest(5, &other, &facts_digest(&facts)), "the schema");
        assert_ne!(digest, input_digest(5, &dataset, &facts_digest(&facts[..2])), "a partition fewer");
    }
}
