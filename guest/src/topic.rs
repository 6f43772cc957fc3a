//! PROVISIONAL (replaced by the full topic module being written in parallel).
/// Topic errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError { Empty, Invalid }
impl core::fmt::Display for TopicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result { write!(f, "{self:?}") }
}
/// Validates a topic name.
pub fn validate_topic_name(n: &str) -> Result<(), TopicError> {
    if n.is_empty() { return Err(TopicError::Empty) }
    if n.contains(['+', '#', '\0']) { return Err(TopicError::Invalid) }
    Ok(())
}
/// Validates a topic filter.
pub fn validate_topic_filter(f: &str) -> Result<(), TopicError> {
    if f.is_empty() { return Err(TopicError::Empty) }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) { return Err(TopicError::Invalid) }
        if l.contains('+') && *l != "+" { return Err(TopicError::Invalid) }
    }
    Ok(())
}
/// Matches.
pub fn matches(_f: &str, _t: &str) -> bool { false }
