//! Amounts in minor units shown as people read them: 12900 CNY is
//! "129.00 CNY", 12900 JPY is "12900 JPY", 12900 BHD is "12.900 BHD".
//!
//! Hand-written rather than taken from a currency crate: all it needs is
//! the few ISO 4217 currencies whose minor unit is not a hundredth, a list
//! that changes once in years, and a crate would bring a table of every
//! currency with names, numbers and countries (and a build script) for it.

/// A currency code as orders carry it. An ISO 4217 code (three capital
/// letters, all ingest lets through) is held in place, so the millions of
/// orders the analytics keep in memory carry no allocation for it; any
/// other text (from a log folded before codes were checked) is kept as is.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Currency {
    Iso([u8; 3]),
    Other(Box<str>),
}

impl Currency {
    pub fn new(code: &str) -> Self {
        match <[u8; 3]>::try_from(code.as_bytes()) {
            Ok(letters) if letters.iter().all(u8::is_ascii_uppercase) => Currency::Iso(letters),
            _ => Currency::Other(code.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Three ASCII capitals, checked in `new`.
            Currency::Iso(letters) => std::str::from_utf8(letters).unwrap_or_default(),
            Currency::Other(text) => text,
        }
    }
}

impl std::ops::Deref for Currency {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Currency {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), formatter)
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl From<&str> for Currency {
    fn from(code: &str) -> Self {
        Currency::new(code)
    }
}

impl PartialEq<str> for Currency {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Currency {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Currency {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Code;
        impl serde::de::Visitor<'_> for Code {
            type Value = Currency;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a currency code")
            }

            fn visit_str<E: serde::de::Error>(self, code: &str) -> Result<Currency, E> {
                Ok(Currency::new(code))
            }
        }
        deserializer.deserialize_str(Code)
    }
}

/// Digits after the decimal point in `currency`'s minor unit (ISO 4217,
/// list one, as of amendment 178); 2 for every code not listed, unknown
/// ones included.
pub fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `minor` units of `currency` as a decimal amount followed by the code.
pub fn format_minor(minor: i64, currency: &str) -> String {
    let digits = minor_unit_digits(currency);
    if digits == 0 {
        return format!("{minor} {currency}");
    }
    let unit = 10_i64.pow(digits);
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    let unit = unit as u64;
    format!(
        "{sign}{}.{:0width$} {currency}",
        magnitude / unit,
        magnitude % unit,
        width = digits as usize
    )
}

/// What to do with more decimals than the currency's minor unit has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraDecimals {
    /// Refuse them: a file of historic orders should not lose money.
    Refuse,
    /// Round half away from zero: tracking SDKs send amounts computed in
    /// floating point (`0.1 + 0.2` is `0.30000000000000004`).
    Round,
}

/// A decimal amount in major units (`12.34`, `-5`, `129.9`) as minor units
/// of `currency`. Exponents (`1e3`) are refused.
pub fn decimal_to_minor(text: &str, currency: &str, extra: ExtraDecimals) -> Result<i64, String> {
    let digits = minor_unit_digits(currency) as usize;
    let text = text.trim();
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = magnitude.split_once('.').unwrap_or((magnitude, ""));
    let well_formed = !whole.is_empty()
        && whole.bytes().all(|byte| byte.is_ascii_digit())
        && fraction.bytes().all(|byte| byte.is_ascii_digit());
    if !well_formed {
        return Err(format!("{text:?} is not a decimal number"));
    }
    let (kept, round_up) = if fraction.len() > digits {
        if extra == ExtraDecimals::Refuse {
            return Err(format!(
                "{text:?} has more decimals than {currency} has ({digits})"
            ));
        }
        (&fraction[..digits], fraction.as_bytes()[digits] >= b'5')
    } else {
        (fraction, false)
    };
    let scaled = format!("{whole}{kept:0<digits$}");
    let too_large = || format!("{text:?} is too large");
    let value: i64 = scaled.parse().map_err(|_| too_large())?;
    let value = value
        .checked_add(i64::from(round_up))
        .ok_or_else(too_large)?;
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_held_in_place_and_read_back_as_given() {
        assert_eq!(Currency::new("USD"), Currency::Iso(*b"USD"));
        assert_eq!(Currency::new("USD").as_str(), "USD");
        for odd in ["usd", "US", "EURO", "", "ÉUR"] {
            let currency = Currency::new(odd);
            assert!(matches!(currency, Currency::Other(_)), "{odd}");
            assert_eq!(currency, odd);
        }
        let stored = postcard::to_stdvec(&(Currency::new("BHD"), Currency::new("xx"))).unwrap();
        let back: (Currency, Currency) = postcard::from_bytes(&stored).unwrap();
        assert_eq!(back, (Currency::new("BHD"), Currency::new("xx")));
        assert_eq!(std::mem::size_of::<Currency>(), 16);
    }

    #[test]
    fn decimals_become_minor_units_of_their_currency() {
        use ExtraDecimals::*;
        assert_eq!(decimal_to_minor("12.34", "USD", Refuse), Ok(1234));
        assert_eq!(decimal_to_minor("12.3", "USD", Refuse), Ok(1230));
        assert_eq!(decimal_to_minor("12", "USD", Refuse), Ok(1200));
        assert_eq!(decimal_to_minor("12900", "JPY", Refuse), Ok(12900));
        assert_eq!(decimal_to_minor("1.234", "BHD", Refuse), Ok(1234));
        assert_eq!(decimal_to_minor("-5.00", "EUR", Refuse), Ok(-500));
        assert!(decimal_to_minor("12.345", "USD", Refuse).is_err());
        assert!(decimal_to_minor("1.5", "JPY", Refuse).is_err());
        assert_eq!(decimal_to_minor("12.345", "USD", Round), Ok(1235));
        assert_eq!(
            decimal_to_minor("0.30000000000000004", "USD", Round),
            Ok(30)
        );
        assert_eq!(decimal_to_minor("-0.125", "USD", Round), Ok(-13));
        assert_eq!(decimal_to_minor("1.5", "JPY", Round), Ok(2));
        for bad in ["twelve", "", "1e3", "-", ".5", "1.2.3"] {
            assert!(decimal_to_minor(bad, "USD", Round).is_err(), "{bad}");
        }
        assert!(decimal_to_minor("92233720368547758.079", "USD", Round).is_err());
    }

    #[test]
    fn each_currency_keeps_its_own_minor_unit() {
        assert_eq!(format_minor(12_900, "CNY"), "129.00 CNY");
        assert_eq!(format_minor(12_900, "JPY"), "12900 JPY");
        assert_eq!(format_minor(12_900, "BHD"), "12.900 BHD");
        assert_eq!(format_minor(5, "KWD"), "0.005 KWD");
        assert_eq!(format_minor(7, "USD"), "0.07 USD");
        assert_eq!(format_minor(0, "EUR"), "0.00 EUR");
        assert_eq!(format_minor(123_456, "CLF"), "12.3456 CLF");
    }

    #[test]
    fn negative_amounts_keep_their_sign_below_one_unit() {
        assert_eq!(format_minor(-5, "USD"), "-0.05 USD");
        assert_eq!(format_minor(-1_050, "EUR"), "-10.50 EUR");
        assert_eq!(format_minor(-3, "JPY"), "-3 JPY");
        assert_eq!(format_minor(i64::MIN, "USD"), "-92233720368547758.08 USD");
    }
}
