//! The Rapport event contract, generated from `proto/rapport/events/v1`.
//!
//! The `.proto` files are the contract between storefronts, services and
//! projections; see `proto/EVOLUTION.md` for how they may change.

#[allow(unreachable_pub, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/rapport.events.v1.rs"));
}

/// What projectors ask of each other; not on any topic.
#[allow(unreachable_pub, clippy::all)]
pub mod internal {
    include!(concat!(env!("OUT_DIR"), "/rapport.internal.v1.rs"));
}

pub mod wire;

pub use prost::Message;

#[cfg(test)]
mod tests {
    //! Schema evolution, as EVOLUTION.md promises it: readers skip what they
    //! do not know, and what a writer did not send reads as its default.
    use super::v1;
    use prost::Message;

    /// The envelope as a future writer might send it: everything v1 has,
    /// plus a field and a payload case v1 does not know.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FutureEvent {
        #[prost(string, tag = "1")]
        event_id: String,
        #[prost(string, tag = "2")]
        r#type: String,
        #[prost(int64, tag = "3")]
        occurred_at_ms: i64,
        #[prost(string, tag = "6")]
        channel: String,
        #[prost(string, tag = "40")]
        locale: String,
        #[prost(message, optional, tag = "60")]
        wishlist_added: Option<FutureWishlist>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct FutureWishlist {
        #[prost(string, tag = "1")]
        sku: String,
    }

    /// The envelope as an older writer sent it: no channel, no payload.
    #[derive(Clone, PartialEq, prost::Message)]
    struct PastEvent {
        #[prost(string, tag = "1")]
        event_id: String,
        #[prost(string, tag = "2")]
        r#type: String,
    }

    #[test]
    fn todays_code_reads_a_record_with_fields_it_does_not_know() {
        let future = FutureEvent {
            event_id: "e-1".into(),
            r#type: "wishlist.added".into(),
            occurred_at_ms: 42,
            channel: "app".into(),
            locale: "de-CH".into(),
            wishlist_added: Some(FutureWishlist {
                sku: "teapot".into(),
            }),
        };
        let read = v1::Event::decode(future.encode_to_vec().as_slice())
            .expect("unknown fields are skipped");
        assert_eq!(
            (
                read.event_id.as_str(),
                read.occurred_at_ms,
                read.channel.as_str()
            ),
            ("e-1", 42, "app")
        );
        assert_eq!(
            read.payload, None,
            "an unknown payload case reads as no payload"
        );
    }

    #[test]
    fn todays_code_reads_an_older_record() {
        let past = PastEvent {
            event_id: "e-0".into(),
            r#type: "web.page_viewed".into(),
        };
        let read =
            v1::Event::decode(past.encode_to_vec().as_slice()).expect("missing fields default");
        assert_eq!(read.event_id, "e-0");
        assert_eq!(
            (
                read.channel.as_str(),
                read.received_at_ms,
                read.customer.is_none()
            ),
            ("", 0, true)
        );
    }

    #[test]
    fn an_older_reader_reads_todays_record() {
        let today = v1::Event {
            event_id: "e-2".into(),
            r#type: "order.placed".into(),
            channel: "web".into(),
            payload: Some(v1::event::Payload::OrderPlaced(v1::OrderPlaced {
                order_id: "o-1".into(),
                total_minor: 100,
                currency: "USD".into(),
                items: vec![],
            })),
            ..Default::default()
        };
        let read =
            PastEvent::decode(today.encode_to_vec().as_slice()).expect("newer fields are skipped");
        assert_eq!(
            (read.event_id.as_str(), read.r#type.as_str()),
            ("e-2", "order.placed")
        );
    }
}
