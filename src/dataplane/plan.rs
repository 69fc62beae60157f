//! TODO
pub fn plan(_d: &super::State, _o: &super::State) -> Vec<super::Op> { Vec::new() }
