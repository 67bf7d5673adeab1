//! Campaign results: what the people a campaign's email was sent to did
//! with it, and the orders it brought. Built from each person's campaign
//! email events (those carrying a `campaign_id`), their email consent
//! withdrawals and their orders; every window is measured in event time,
//! so the figures depend on the log alone and a replay gives the same.
//!
//! Per campaign, over the people it was sent to:
//! - `sent`: people with an `email.sent` of the campaign, from their first;
//! - `bounced`: of them, those with an `email.bounced`; `delivered` the rest;
//! - `opened`: those with an `email.opened` or `email.clicked` (a click
//!   opens the mail even when the open was not tracked); `clicked`: those
//!   with an `email.clicked`;
//! - `unsubscribed`: those who withdrew email consent within
//!   `unsubscribe_window_days` of the send;
//! - `converted`: those with an order attributed to the campaign. An order
//!   goes to the last open or click, of any campaign sent to the person, at
//!   or before the order and at most `conversion_window_days` before it
//!   (last touch); touches at the same instant rank a click above an open,
//!   then by campaign id. `orders` and `revenue_minor` (net of refunds,
//!   reporting currency; cancelled orders count for nothing) are the
//!   attributed orders; other currencies' revenue is kept apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::CampaignConfig;
use super::scoring::CustomerFacts;
use crate::customer_view::{MailFact, MailKind};

const DAY_MS: i64 = 86_400_000;

/// What one person did with one campaign they were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipient {
    /// Their first `email.sent` of the campaign.
    pub sent_at_ms: i64,
    pub bounced: bool,
    pub opened: bool,
    pub clicked: bool,
    pub unsubscribed: bool,
    /// Orders attributed to the campaign, and their net value.
    pub orders: u32,
    pub revenue_minor: i64,
    /// Net value of attributed orders in other currencies.
    pub other_currencies: BTreeMap<String, i64>,
}

/// Every campaign `facts` was sent, with what they did with it.
pub fn recipients<'a>(
    facts: &'a CustomerFacts,
    config: &CampaignConfig,
    reporting_currency: &str,
) -> BTreeMap<&'a str, Recipient> {
    let Some(history) = facts.mail.as_deref() else {
        return BTreeMap::new();
    };
    let mut sent: BTreeMap<&str, i64> = BTreeMap::new();
    for mail in history
        .mail
        .iter()
        .filter(|mail| mail.kind == MailKind::Sent)
    {
        let first = sent.entry(mail.campaign_id.as_str()).or_insert(mail.at_ms);
        *first = (*first).min(mail.at_ms);
    }
    let mut campaigns: BTreeMap<&str, Recipient> = sent
        .iter()
        .map(|(campaign, at_ms)| {
            let unsubscribe_by = at_ms + config.unsubscribe_window_days * DAY_MS;
            let unsubscribed = history
                .consent_withdrawn_ms
                .iter()
                .any(|withdrawn| (*at_ms..=unsubscribe_by).contains(withdrawn));
            (
                *campaign,
                Recipient {
                    sent_at_ms: *at_ms,
                    unsubscribed,
                    ..Recipient::default()
                },
            )
        })
        .collect();
    // Touches of campaigns they were sent, oldest first (the facts are
    // sorted by time, kind and campaign).
    let mut touches: Vec<&MailFact> = Vec::new();
    for mail in &history.mail {
        let Some(recipient) = campaigns.get_mut(mail.campaign_id.as_str()) else {
            continue;
        };
        match mail.kind {
            MailKind::Sent => {}
            MailKind::Bounced => recipient.bounced = true,
            MailKind::Opened => {
                recipient.opened = true;
                touches.push(mail);
            }
            MailKind::Clicked => {
                recipient.opened = true;
                recipient.clicked = true;
                touches.push(mail);
            }
        }
    }
    if touches.is_empty() {
        return campaigns;
    }
    let window_ms = config.conversion_window_days * DAY_MS;
    for order in facts
        .orders
        .iter()
        .filter(|order| order.cancelled_day.is_none())
    {
        // The last touch at or before the order, if recent enough.
        let before = touches.partition_point(|touch| touch.at_ms <= order.placed_at_ms);
        let Some(touch) = before.checked_sub(1).map(|index| touches[index]) else {
            continue;
        };
        if order.placed_at_ms - touch.at_ms > window_ms {
            continue;
        }
        let recipient = campaigns
            .get_mut(touch.campaign_id.as_str())
            .expect("touches are of campaigns sent");
        let net: i64 =
            order.total_minor - order.refunds.iter().map(|(_, amount)| amount).sum::<i64>();
        recipient.orders += 1;
        if order.currency == reporting_currency {
            recipient.revenue_minor += net;
        } else {
            *recipient
                .other_currencies
                .entry(order.currency.to_string())
                .or_default() += net;
        }
    }
    campaigns
}

/// A campaign's figures over a set of its recipients.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignTotals {
    pub sent: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub opened: u64,
    pub clicked: u64,
    pub unsubscribed: u64,
    pub converted: u64,
    pub orders: u64,
    /// Net of refunds, in the reporting currency's minor units.
    pub revenue_minor: i64,
    /// Attributed revenue in other currencies, never converted.
    pub other_currencies: BTreeMap<String, i64>,
    /// Shares of the delivered: opened, clicked, unsubscribed, converted;
    /// `null` when nothing was delivered.
    pub open_rate: Option<f64>,
    pub click_rate: Option<f64>,
    pub unsubscribe_rate: Option<f64>,
    pub conversion_rate: Option<f64>,
}

impl CampaignTotals {
    pub fn add(&mut self, recipient: &Recipient) {
        self.sent += 1;
        if recipient.bounced {
            self.bounced += 1;
        } else {
            self.delivered += 1;
        }
        self.opened += u64::from(recipient.opened);
        self.clicked += u64::from(recipient.clicked);
        self.unsubscribed += u64::from(recipient.unsubscribed);
        self.converted += u64::from(recipient.orders > 0);
        self.orders += u64::from(recipient.orders);
        self.revenue_minor += recipient.revenue_minor;
        for (currency, amount) in &recipient.other_currencies {
            *self.other_currencies.entry(currency.clone()).or_default() += amount;
        }
        self.rates();
    }

    /// Adds the recipients `other` counted (others than these).
    pub fn merge(&mut self, other: &CampaignTotals) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.bounced += other.bounced;
        self.opened += other.opened;
        self.clicked += other.clicked;
        self.unsubscribed += other.unsubscribed;
        self.converted += other.converted;
        self.orders += other.orders;
        self.revenue_minor += other.revenue_minor;
        for (currency, amount) in &other.other_currencies {
            *self.other_currencies.entry(currency.clone()).or_default() += amount;
        }
        self.rates();
    }

    fn rates(&mut self) {
        let share = |count: u64| (self.delivered > 0).then(|| count as f64 / self.delivered as f64);
        self.open_rate = share(self.opened);
        self.click_rate = share(self.clicked);
        self.unsubscribe_rate = share(self.unsubscribed);
        self.conversion_rate = share(self.converted);
    }
}

/// One campaign over everyone it was sent to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignSummary {
    pub first_sent_ms: i64,
    pub last_sent_ms: i64,
    pub totals: CampaignTotals,
}

impl CampaignSummary {
    /// Adds the recipients `other` summed (others than these).
    pub fn merge(&mut self, other: &CampaignSummary) {
        self.first_sent_ms = self.first_sent_ms.min(other.first_sent_ms);
        self.last_sent_ms = self.last_sent_ms.max(other.last_sent_ms);
        self.totals.merge(&other.totals);
    }
}

/// Every campaign's figures over `people`.
pub fn campaign_summaries<'a>(
    people: impl IntoIterator<Item = &'a CustomerFacts>,
    config: &CampaignConfig,
    reporting_currency: &str,
) -> BTreeMap<String, CampaignSummary> {
    let mut summaries: BTreeMap<String, CampaignSummary> = BTreeMap::new();
    for facts in people {
        for (campaign, recipient) in recipients(facts, config, reporting_currency) {
            match summaries.get_mut(campaign) {
                Some(summary) => {
                    summary.first_sent_ms = summary.first_sent_ms.min(recipient.sent_at_ms);
                    summary.last_sent_ms = summary.last_sent_ms.max(recipient.sent_at_ms);
                    summary.totals.add(&recipient);
                }
                None => {
                    let mut summary = CampaignSummary {
                        first_sent_ms: recipient.sent_at_ms,
                        last_sent_ms: recipient.sent_at_ms,
                        totals: CampaignTotals::default(),
                    };
                    summary.totals.add(&recipient);
                    summaries.insert(campaign.to_owned(), summary);
                }
            }
        }
    }
    summaries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::scoring::{MailHistory, OrderHistory};

    const HOUR_MS: i64 = 3_600_000;

    fn mail(at_ms: i64, kind: MailKind, campaign: &str) -> MailFact {
        MailFact {
            at_ms,
            kind,
            campaign_id: campaign.into(),
        }
    }

    fn order(id: &str, at_ms: i64, total_minor: i64) -> OrderHistory {
        OrderHistory {
            order_id: id.into(),
            placed_day: at_ms.div_euclid(DAY_MS),
            placed_at_ms: at_ms,
            currency: "USD".into(),
            total_minor,
            cancelled_day: None,
            refunds: Vec::new(),
        }
    }

    /// A person with these mail events (sorted as the facts keep them),
    /// consent withdrawals and orders.
    fn person(
        mut mail: Vec<MailFact>,
        withdrawn: Vec<i64>,
        orders: Vec<OrderHistory>,
    ) -> CustomerFacts {
        mail.sort_by(|left, right| {
            (left.at_ms, left.kind, &left.campaign_id).cmp(&(
                right.at_ms,
                right.kind,
                &right.campaign_id,
            ))
        });
        CustomerFacts {
            orders,
            mail: Some(Box::new(MailHistory {
                mail,
                consent_withdrawn_ms: withdrawn,
            })),
            ..CustomerFacts::default()
        }
    }

    fn of(facts: &CustomerFacts) -> BTreeMap<&str, Recipient> {
        recipients(facts, &CampaignConfig::default(), "USD")
    }

    #[test]
    fn an_order_inside_the_window_after_an_open_converts() {
        // Given a mail sent on day 10, opened six days later, and an order
        // 23 hours after the open
        let sent = 10 * DAY_MS;
        let opened = sent + 6 * DAY_MS;
        let facts = person(
            vec![
                mail(sent, MailKind::Sent, "spring"),
                mail(opened, MailKind::Opened, "spring"),
            ],
            vec![],
            vec![order("o-1", opened + 23 * HOUR_MS, 4_500)],
        );
        // When the campaign's recipients are worked out
        let spring = &of(&facts)["spring"];
        // Then the order is the campaign's
        assert!(spring.opened && !spring.clicked && !spring.bounced);
        assert_eq!((spring.orders, spring.revenue_minor), (1, 4_500));
    }

    #[test]
    fn an_order_outside_the_window_or_before_the_touch_does_not() {
        // Given an open, an order just over seven days later, and an order
        // an hour before the open
        let sent = 10 * DAY_MS;
        let opened = sent + HOUR_MS;
        let facts = person(
            vec![
                mail(sent, MailKind::Sent, "spring"),
                mail(opened, MailKind::Opened, "spring"),
            ],
            vec![],
            vec![
                order("late", opened + 7 * DAY_MS + 1, 4_500),
                order("early", opened - HOUR_MS, 2_000),
            ],
        );
        // Then neither converts
        assert_eq!(of(&facts)["spring"].orders, 0);
        // And the window is a setting: eight days takes the late order
        let longer = CampaignConfig {
            conversion_window_days: 8,
            ..CampaignConfig::default()
        };
        assert_eq!(recipients(&facts, &longer, "USD")["spring"].orders, 1);
        // And exactly seven days is inside
        let facts = person(
            vec![
                mail(sent, MailKind::Sent, "spring"),
                mail(opened, MailKind::Opened, "spring"),
            ],
            vec![],
            vec![order("edge", opened + 7 * DAY_MS, 4_500)],
        );
        assert_eq!(of(&facts)["spring"].orders, 1);
    }

    #[test]
    fn two_campaigns_competing_for_one_order_the_last_touch_wins() {
        // Given two campaigns sent and clicked, "autumn" clicked a day
        // before the order and "spring" opened two hours before it
        let order_at = 20 * DAY_MS;
        let facts = person(
            vec![
                mail(10 * DAY_MS, MailKind::Sent, "autumn"),
                mail(11 * DAY_MS, MailKind::Sent, "spring"),
                mail(order_at - DAY_MS, MailKind::Clicked, "autumn"),
                mail(order_at - 2 * HOUR_MS, MailKind::Opened, "spring"),
            ],
            vec![],
            vec![order("o-1", order_at, 9_900)],
        );
        // Then the order is spring's alone
        let campaigns = of(&facts);
        assert_eq!(campaigns["spring"].orders, 1);
        assert_eq!(campaigns["autumn"].orders, 0);
        assert!(campaigns["autumn"].clicked && campaigns["autumn"].opened);
        // And at the same instant a click ranks above an open
        let facts = person(
            vec![
                mail(10 * DAY_MS, MailKind::Sent, "autumn"),
                mail(10 * DAY_MS, MailKind::Sent, "spring"),
                mail(order_at - HOUR_MS, MailKind::Clicked, "autumn"),
                mail(order_at - HOUR_MS, MailKind::Opened, "spring"),
            ],
            vec![],
            vec![order("o-1", order_at, 9_900)],
        );
        let campaigns = of(&facts);
        assert_eq!(
            (campaigns["autumn"].orders, campaigns["spring"].orders),
            (1, 0)
        );
    }

    #[test]
    fn bounced_mail_is_sent_but_not_delivered_and_refunds_and_cancellations_count() {
        // Given a bounced mail, and a delivered one opened before an order
        // refunded in part and another order cancelled
        let sent = 10 * DAY_MS;
        let mut refunded = order("refunded", sent + 2 * DAY_MS, 5_000);
        refunded.refunds.push((sent.div_euclid(DAY_MS) + 5, 1_200));
        let mut cancelled = order("cancelled", sent + 3 * DAY_MS, 7_000);
        cancelled.cancelled_day = Some(sent.div_euclid(DAY_MS) + 4);
        let bounced = person(
            vec![
                mail(sent, MailKind::Sent, "spring"),
                mail(sent + HOUR_MS, MailKind::Bounced, "spring"),
            ],
            vec![],
            vec![],
        );
        let buyer = person(
            vec![
                mail(sent, MailKind::Sent, "spring"),
                mail(sent + DAY_MS, MailKind::Opened, "spring"),
            ],
            vec![],
            vec![refunded, cancelled],
        );
        // When both are summed up
        let summaries = campaign_summaries([&bounced, &buyer], &CampaignConfig::default(), "USD");
        let totals = &summaries["spring"].totals;
        // Then
        assert_eq!((totals.sent, totals.delivered, totals.bounced), (2, 1, 1));
        assert_eq!((totals.opened, totals.converted, totals.orders), (1, 1, 1));
        assert_eq!(totals.revenue_minor, 3_800);
        assert_eq!(totals.open_rate, Some(1.0));
    }

    #[test]
    fn consent_withdrawn_within_seven_days_is_an_unsubscribe() {
        let sent = 10 * DAY_MS;
        let within = person(
            vec![mail(sent, MailKind::Sent, "spring")],
            vec![sent + 3 * DAY_MS],
            vec![],
        );
        let after = person(
            vec![mail(sent, MailKind::Sent, "spring")],
            vec![sent + 8 * DAY_MS],
            vec![],
        );
        let before = person(
            vec![mail(sent, MailKind::Sent, "spring")],
            vec![sent - DAY_MS],
            vec![],
        );
        assert!(of(&within)["spring"].unsubscribed);
        assert!(!of(&after)["spring"].unsubscribed);
        assert!(!of(&before)["spring"].unsubscribed);
    }

    #[test]
    fn touches_of_campaigns_never_sent_are_ignored_and_the_first_send_counts() {
        // Given an open of a campaign with no send on record, and a
        // campaign sent twice
        let facts = person(
            vec![
                mail(5 * DAY_MS, MailKind::Opened, "ghost"),
                mail(2 * DAY_MS, MailKind::Sent, "spring"),
                mail(9 * DAY_MS, MailKind::Sent, "spring"),
            ],
            vec![],
            vec![order("o-1", 6 * DAY_MS, 1_000)],
        );
        let campaigns = of(&facts);
        // Then only the sent campaign is there, from its first send, and
        // the order converts nothing
        assert_eq!(campaigns.keys().copied().collect::<Vec<_>>(), ["spring"]);
        assert_eq!(campaigns["spring"].sent_at_ms, 2 * DAY_MS);
        assert_eq!(campaigns["spring"].orders, 0);
        // And people without mail have no campaigns
        assert!(of(&CustomerFacts::default()).is_empty());
    }
}
