//! Time you can trust: a device's clock offset as a sync measures it, and the corrected time of
//! an event. One rule for the server, which corrects every event it receives by the offset of
//! the sync that delivered it, and for the phone, which can correct its own scans by the offset
//! it last measured.
//!
//! The offset is server time minus device time: every sync request carries the device's clock
//! ([`crate::protocol::SyncRequest::device_time_ms`]) and the server reads its own when the
//! request arrives. Positive: the device's clock is behind (slow); negative: ahead (fast). It
//! includes the request's time in transit, so a right clock measures a small positive offset
//! (the time the request took), and a corrected time is later than the truth by that much at
//! most.

/// An offset beyond this many milliseconds either way flags the events of the sync that
/// measured it ([`crate::flags::EventFlag::ClockSkew`]), unless a site sets its own threshold.
pub const DEFAULT_CLOCK_SKEW_THRESHOLD_MS: i64 = 2 * 60 * 1000;

/// Server time minus device time: `received_ms` is when the server received the request,
/// `device_sent_ms` the device's clock in the request.
pub fn clock_offset_ms(received_ms: i64, device_sent_ms: i64) -> i64 {
    received_ms.saturating_sub(device_sent_ms)
}

/// An event's corrected time: its device time moved by the device's clock offset, and never
/// later than `received_ms`, when the server received it (nothing is corrected into the future;
/// on the phone, its own corrected "now"). With an offset of 0 this is the device time, bounded
/// the same way: how events stored before corrected times existed are read.
pub fn corrected_time_ms(device_ms: i64, offset_ms: i64, received_ms: i64) -> i64 {
    device_ms.saturating_add(offset_ms).min(received_ms)
}

/// Whether an offset is beyond the threshold, either way (a threshold's sign does not matter).
pub fn is_skewed(offset_ms: i64, threshold_ms: i64) -> bool {
    offset_ms.unsigned_abs() > threshold_ms.unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const RECEIVED: i64 = 1_740_866_400_000;

    /// Without an offset (events stored before corrected times): the device time, bounded by
    /// the receipt; absurd clocks saturate instead of overflowing.
    #[test]
    fn the_rule_is_bounded_and_saturates() {
        assert_eq!(corrected_time_ms(RECEIVED + HOUR, 0, RECEIVED), RECEIVED);
        assert_eq!(
            corrected_time_ms(RECEIVED - HOUR, 0, RECEIVED),
            RECEIVED - HOUR
        );
        assert_eq!(corrected_time_ms(i64::MAX, i64::MAX, RECEIVED), RECEIVED);
        assert_eq!(corrected_time_ms(i64::MIN, i64::MIN, RECEIVED), i64::MIN);
        assert_eq!(clock_offset_ms(i64::MIN, i64::MAX), i64::MIN);
        assert!(is_skewed(-121_000, 120_000) && is_skewed(121_000, -120_000));
        assert!(!is_skewed(120_000, 120_000) && !is_skewed(i64::MIN + 1, i64::MAX));
    }
}
