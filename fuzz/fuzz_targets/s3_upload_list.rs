//! The parser of an S3 server's `ListMultipartUploads` answer (what
//! `ferry endpoint check` reads to find unfinished uploads) never panics on
//! any bytes.
#![no_main]

use ferry::endpoint::parse_upload_list;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_upload_list(data);
});
