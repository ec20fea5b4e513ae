//! A client's request body is network input, and so are a provider's reply and error body:
//! the translation (`cliproxy_translate::Pair`) reads them in each of the four API formats and
//! writes them in the others. Whatever the bytes, for every pair (client format, provider
//! format of another kind): decoding the request never panics, and a decoded request is
//! either refused or encoded as a JSON object; translating the bytes as the provider's whole
//! reply never panics and gives JSON when it succeeds; translating them as the provider's
//! error answer (under the status the first byte gives) never panics, keeps the status and
//! gives a JSON body.
//!
//! Input layout (the seeds in `fuzz/seeds/translate_request/` follow it):
//! - byte 0: the status of the error answer (`400 + byte % 200`);
//! - the rest: the body, tried as a request, a reply and an error of every format.
#![no_main]

use cliproxy_translate::{Format, Pair};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [status, body @ ..] = data else { return };
    let status = 400 + u16::from(*status) % 200;
    for client in Format::ALL {
        // Decoded once per client format, encoded for every other provider.
        let request = Pair::new(client, client).decode_request(body);
        for provider in Format::ALL {
            if provider == client {
                continue;
            }
            let pair = Pair::new(client, provider);
            if let Ok(request) = &request
                && let Ok(upstream) = pair.encode_request(request)
            {
                let value = serde_json::from_slice::<serde_json::Value>(&upstream);
                assert!(
                    value.is_ok_and(|v| v.is_object()),
                    "{client:?} → {provider:?}: the upstream request is not a JSON object"
                );
            }
            if let Ok(reply) = pair.response(body) {
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&reply).is_ok(),
                    "{provider:?} → {client:?}: the client's reply is not JSON"
                );
            }
            let (client_status, error) = pair.error(status, body);
            assert_eq!(client_status, status, "{provider:?} → {client:?}: the status changed");
            assert!(
                serde_json::from_slice::<serde_json::Value>(&error).is_ok(),
                "{provider:?} → {client:?}: the client's error body is not JSON"
            );
        }
    }
});
