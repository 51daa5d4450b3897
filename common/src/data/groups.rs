//! `fashion-hier`'s coarse groups: which Fashion-MNIST classes share a super-category, the labels the
//! hierarchical design's coarse classifier learns and its controller routes by (`data.coarse_groups`).
use super::datasets::FASHION_CLASSES;
use crate::error::{Error, Result};

/// The default grouping: tops {0,2,4,6}, trousers and dresses {1,3}, footwear {5,7,9}, bags {8}.
pub const DEFAULT_COARSE_GROUPS: [&[u8]; 4] = [&[0, 2, 4, 6], &[1, 3], &[5, 7, 9], &[8]];
/// Names of the default groups, by group label.
pub const COARSE_NAMES: [&str; 4] = ["tops", "trousers and dresses", "footwear", "bags"];

/// A partition of the ten Fashion-MNIST classes into coarse groups; group `g`'s label is `g`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoarseGroups {
    /// Per fine class, its group.
    group_of: [u8; 10],
    names: Vec<String>,
}

impl Default for CoarseGroups {
    fn default() -> Self {
        let groups: Vec<Vec<u8>> = DEFAULT_COARSE_GROUPS.iter().map(|g| g.to_vec()).collect();
        let mut this = Self::new(&groups).unwrap_or_else(|e| unreachable!("the default grouping is valid: {e}"));
        this.names = COARSE_NAMES.map(String::from).to_vec();
        this
    }
}

impl CoarseGroups {
    /// `groups[g]` lists group g's classes; every class 0..10 must be in exactly one group. A group
    /// other than the default ones is named by its classes, joined by `+`.
    pub fn new(groups: &[Vec<u8>]) -> Result<Self> {
        let invalid = |m: String| Error::Invalid(format!("key `data.coarse_groups`: {m}"));
        if groups.len() < 2 {
            return Err(invalid(format!("{} group(s); a hierarchy needs at least 2", groups.len())));
        }
        let mut group_of = [u8::MAX; 10];
        for (g, classes) in groups.iter().enumerate() {
            if classes.is_empty() {
                return Err(invalid(format!("group {g} is empty")));
            }
            for &c in classes {
                let slot = group_of
                    .get_mut(c as usize)
                    .ok_or_else(|| invalid(format!("group {g} names class {c}; Fashion-MNIST's are 0..10")))?;
                if *slot == g as u8 {
                    return Err(invalid(format!("class {c} appears twice in group {g}")));
                }
                if *slot != u8::MAX {
                    return Err(invalid(format!("class {c} is in group {} and in group {g}", *slot)));
                }
                *slot = g as u8;
            }
        }
        if let Some(missing) = group_of.iter().position(|&g| g == u8::MAX) {
            return Err(invalid(format!("class {missing} ({}) is in no group", FASHION_CLASSES[missing])));
        }
        let names = groups
            .iter()
            .map(|classes| classes.iter().map(|&c| FASHION_CLASSES[c as usize]).collect::<Vec<_>>().join("+"))
            .collect();
        Ok(Self { group_of, names })
    }

    /// The groups of `data.coarse_groups`, or the default ones.
    pub fn from_config(groups: Option<&[Vec<u8>]>) -> Result<Self> {
        match groups {
            Some(groups) if groups.iter().map(Vec::as_slice).ne(DEFAULT_COARSE_GROUPS) => Self::new(groups),
            _ => Ok(Self::default()),
        }
    }

    /// The group of fine class `fine`, or `None` outside 0..10.
    pub fn of(&self, fine: u8) -> Option<u8> {
        self.group_of.get(fine as usize).copied()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_groups_label_every_class() {
        let g = CoarseGroups::default();
        assert_eq!((0..10).map(|c| g.of(c).unwrap()).collect::<Vec<_>>(), [0, 1, 0, 1, 0, 2, 0, 2, 3, 2]);
        assert_eq!(g.names(), COARSE_NAMES);
        assert_eq!(g.of(10), None);
        let same: Vec<Vec<u8>> = DEFAULT_COARSE_GROUPS.iter().map(|g| g.to_vec()).collect();
        assert_eq!(CoarseGroups::from_config(Some(&same)).unwrap(), g);
    }

    #[test]
    fn custom_groups_are_named_by_their_classes() {
        let g = CoarseGroups::new(&[vec![0, 2, 3, 4, 6], vec![1], vec![5, 7, 9], vec![8]]).unwrap();
        assert_eq!((0..10).map(|c| g.of(c).unwrap()).collect::<Vec<_>>(), [0, 1, 0, 0, 0, 2, 0, 2, 3, 2]);
        assert_eq!(g.len(), 4);
        assert_eq!(g.names()[1], "Trouser");
        assert_eq!(g.names()[0], "T-shirt/top+Pullover+Dress+Coat+Shirt");
    }

    #[test]
    fn a_bad_partition_is_refused_naming_the_class() {
        let err = |groups: &[Vec<u8>]| CoarseGroups::new(groups).unwrap_err().to_string();
        let all_but_8: Vec<u8> = (0..10).filter(|&c| c != 8).collect();
        assert!(err(&[vec![0, 1, 2], vec![2, 3]]).contains("class 2 is in group 0 and in group 1"));
        assert!(err(&[vec![0, 1, 1], vec![2, 3]]).contains("class 1 appears twice in group 0"));
        assert!(err(&[all_but_8.clone(), vec![]]).contains("group 1 is empty"));
        assert!(err(&[all_but_8.clone(), vec![10]]).contains("class 10"));
        assert!(err(&[all_but_8[..8].to_vec(), vec![8]]).contains("class 9 (Ankle boot) is in no group"));
        assert!(err(&[(0..10).collect()]).contains("at least 2"));
        assert!(err(&[vec![0]]).starts_with("key `data.coarse_groups`: "));
    }
}
