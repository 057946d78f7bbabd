//! How many requests each provider may still take right now: its documented or learned
//! windows (per minute, per day) as the shared state last showed them, plus what this
//! process sent and has not recorded yet. One run asks it before every request; a batch
//! shares one across its items and syncs it from the state after each item, so races,
//! hedges and concurrent items never push a provider over its limit (DESIGN §5, §6).
//! Pure: the clock comes in as `now_ms`.

use std::collections::{HashMap, VecDeque};

use crate::health::Health;
use crate::providers::Provider;

#[derive(Debug, Clone, Default)]
struct Slot {
    per_minute: Option<u32>,
    per_day: Option<u32>,
    day_offset_ms: i64,
    /// The state's view: requests in its current minute window, which ends then.
    minute_used: u32,
    minute_end_ms: u64,
    /// The state's view: requests on its current day.
    day_used: u32,
    day: u64,
    blocked_until_ms: u64,
    /// The store refused a reservation: every window of the provider is full until then,
    /// as all processes sharing the store count it (DESIGN §9).
    full_until_ms: u64,
    /// Sent by this process and not yet folded into the state.
    unrecorded: u32,
    /// When this process sent its requests within the last window (a sliding window,
    /// so no stretch of one window's length ever holds more than the limit).
    sent: VecDeque<u64>,
}

/// Slack added to the sliding window so that network jitter cannot squeeze one more
/// request into a provider's window than it allows.
const WINDOW_SLACK_MS: u64 = 50;

impl Slot {
    fn day_of(&self, now_ms: u64) -> u64 {
        crate::health::provider_day(now_ms, self.day_offset_ms)
    }

    fn window() -> u64 {
        crate::minute_ms() + WINDOW_SLACK_MS
    }

    /// Our own sends in the last window, plus what others sent in the state's window.
    fn minute_used(&self, now_ms: u64) -> u32 {
        let own = self
            .sent
            .iter()
            .filter(|&&t| t + Self::window() > now_ms)
            .count() as u32;
        let state = if now_ms < self.minute_end_ms {
            self.minute_used
        } else {
            0
        };
        let own_recorded = own.saturating_sub(self.unrecorded);
        own + state.saturating_sub(own_recorded)
    }

    fn minute_full(&self, now_ms: u64) -> bool {
        self.per_minute
            .is_some_and(|cap| self.minute_used(now_ms) >= cap)
    }

    fn day_full(&self, now_ms: u64) -> bool {
        let used = if self.day == self.day_of(now_ms) {
            self.day_used
        } else {
            0
        };
        self.per_day
            .is_some_and(|cap| used + self.unrecorded >= cap)
    }

    fn has_room(&self, now_ms: u64) -> bool {
        self.blocked_until_ms <= now_ms
            && self.full_until_ms <= now_ms
            && !self.minute_full(now_ms)
            && !self.day_full(now_ms)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Limiter {
    slots: HashMap<String, Slot>,
}

impl Limiter {
    /// Limits from the providers (config and presets), counts from the state.
    pub fn new(providers: &[Provider], state: &Health, now_ms: u64) -> Limiter {
        let mut l = Limiter::default();
        for p in providers {
            l.slots.insert(
                p.name.clone(),
                Slot {
                    per_minute: p.limits.per_minute,
                    per_day: p.limits.per_day,
                    day_offset_ms: p.day_offset_ms,
                    ..Slot::default()
                },
            );
        }
        l.sync(state, now_ms);
        l
    }

    /// Takes the state's latest counts (other processes included) and learned limits.
    pub fn sync(&mut self, state: &Health, now_ms: u64) {
        for (name, slot) in self.slots.iter_mut() {
            let Some(p) = state.providers.get(name) else {
                continue;
            };
            slot.minute_used = p.requests_this_minute(now_ms);
            slot.minute_end_ms = p.minute_frees_at(now_ms).unwrap_or(0);
            slot.day_used = p.day_count;
            slot.day = p.day;
            slot.blocked_until_ms = p.blocked_until_ms;
            if p.day_limit.is_some() {
                slot.per_day = p.day_limit;
            }
        }
    }

    pub fn has_room(&self, provider: &str, now_ms: u64) -> bool {
        self.slots.get(provider).is_none_or(|s| s.has_room(now_ms))
    }

    /// Reserves one request if the provider has room.
    pub fn try_take(&mut self, provider: &str, now_ms: u64) -> bool {
        match self.slots.get_mut(provider) {
            None => true,
            Some(s) if s.has_room(now_ms) => {
                s.unrecorded += 1;
                while s
                    .sent
                    .front()
                    .is_some_and(|&t| t + Slot::window() <= now_ms)
                {
                    s.sent.pop_front();
                }
                s.sent.push_back(now_ms);
                true
            }
            Some(_) => false,
        }
    }

    /// The store found no room for a request at the provider until `until_ms` (other
    /// processes' requests fill its window): no request is tried there before then.
    pub fn refused(&mut self, provider: &str, until_ms: u64) {
        if let Some(s) = self.slots.get_mut(provider) {
            s.full_until_ms = s.full_until_ms.max(until_ms);
        }
    }

    /// `n` requests sent to the provider are now in the state.
    pub fn recorded(&mut self, provider: &str, n: u32) {
        if let Some(s) = self.slots.get_mut(provider) {
            s.unrecorded = s.unrecorded.saturating_sub(n);
        }
    }

    /// When the provider may take a request again: now if it has room; `None` when only
    /// requests still in flight fill it (room comes when they are recorded).
    pub fn room_at(&self, provider: &str, now_ms: u64) -> Option<u64> {
        let Some(s) = self.slots.get(provider) else {
            return Some(now_ms);
        };
        if s.has_room(now_ms) {
            return Some(now_ms);
        }
        let mut at = now_ms;
        if s.blocked_until_ms > now_ms {
            at = at.max(s.blocked_until_ms);
        }
        if s.full_until_ms > now_ms {
            at = at.max(s.full_until_ms);
        }
        if s.minute_full(now_ms) {
            let state_full =
                now_ms < s.minute_end_ms && s.per_minute.is_some_and(|c| s.minute_used >= c);
            let oldest_own = s.sent.iter().find(|&&t| t + Slot::window() > now_ms);
            match (state_full, oldest_own) {
                (true, _) => at = at.max(s.minute_end_ms),
                (false, Some(&t)) => at = at.max(t + Slot::window()),
                (false, None) => return None,
            }
        }
        if s.day_full(now_ms) {
            // The next day starts at the provider's reset, not at UTC midnight.
            at = at.max(crate::health::day_end_ms(s.day_of(now_ms), s.day_offset_ms));
        }
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ProviderStats;
    use crate::providers::{Limits, Tier};

    fn provider(per_minute: u32) -> Provider {
        let mut p = Provider::custom("p", "http://127.0.0.1:1/v1", Tier::Cloud);
        p.limits = Limits {
            per_minute: Some(per_minute),
            per_day: None,
        };
        p
    }

    #[test]
    fn in_flight_and_recorded_requests_share_the_window() {
        let mut state = Health::default();
        state.providers.insert(
            "p".into(),
            ProviderStats {
                minute_sent_ms: vec![1_000, 1_000],
                ..Default::default()
            },
        );
        let mut l = Limiter::new(&[provider(3)], &state, 1_500);
        assert!(l.try_take("p", 1_500));
        assert!(!l.try_take("p", 1_600), "2 recorded + 1 in flight fill 3");
        assert_eq!(
            l.room_at("p", 1_600),
            Some(61_550),
            "a window after our own send, plus slack"
        );
        l.recorded("p", 1);
        state
            .providers
            .get_mut("p")
            .unwrap()
            .minute_sent_ms
            .push(1_500);
        l.sync(&state, 1_700);
        assert_eq!(
            l.room_at("p", 1_700),
            Some(61_050),
            "the state's window ends a minute (plus slack) after its oldest request"
        );
        assert!(l.try_take("p", 61_050));
        assert!(
            l.try_take("unknown", 0),
            "providers without limits always have room"
        );
    }

    #[test]
    fn a_full_day_opens_again_at_the_providers_own_reset() {
        let mut p = provider(100);
        p.limits.per_day = Some(1);
        p.day_offset_ms = -8 * 3_600_000; // Pacific midnight = 08:00 UTC
        let two_am_utc = 20_000 * 86_400_000 + 2 * 3_600_000;
        let mut l = Limiter::new(&[p], &Health::default(), two_am_utc);
        assert!(l.try_take("p", two_am_utc));
        assert_eq!(
            l.room_at("p", two_am_utc + 1),
            Some(20_000 * 86_400_000 + 8 * 3_600_000)
        );
    }
}
