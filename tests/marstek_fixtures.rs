//! Every captured device reply in `tests/fixtures/marstek/` decodes, through the profile of the
//! device that sent it, into the expected domain `Sample` fields (signs, units, scaling).

use chrono::Utc;
use marstek_bridge::domain::DeviceId;
use marstek_bridge::marstek::profile::{Profile, RoundData, build_sample};
use marstek_bridge::marstek::protocol::{DeviceResult, Response, decode_result, method};
use serde_json::Value;

#[test]
fn every_fixture_decodes_to_its_expected_sample() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/marstek");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.display().to_string();
        let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let profile = Profile::from_device(&DeviceResult {
            device: fx["device"].as_str().map(str::to_string),
            ver: fx["ver"].as_i64(),
            ..Default::default()
        });
        let bytes = serde_json::to_vec(&fx["reply"]).unwrap();
        let resp = Response::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.id.map(i64::from), fx["reply"]["id"].as_i64(), "{name}");
        if let Some(code) = fx["expect_error"].as_i64() {
            assert_eq!(resp.body.unwrap_err().code, code, "{name}");
            checked += 1;
            continue;
        }
        let result = resp.body.unwrap();
        let mut data = RoundData::default();
        match fx["method"].as_str().unwrap() {
            method::ES_STATUS => data.es = Some(decode_result(&result).unwrap()),
            method::ES_GET_MODE => data.mode = Some(decode_result(&result).unwrap()),
            method::BAT_STATUS => data.bat = Some(decode_result(&result).unwrap()),
            method::PV_STATUS => data.pv = Some(decode_result(&result).unwrap()),
            other => panic!("{name}: no decoder for {other}"),
        }
        let sample = build_sample(&profile, DeviceId::parse("fx").unwrap(), Utc::now(), &data);
        let got = serde_json::to_value(&sample).unwrap();
        for (k, want) in fx["expect"].as_object().unwrap() {
            assert_eq!(&got[k], want, "{name}: field {k}");
        }
        checked += 1;
    }
    assert_eq!(checked, 7, "all captures of reference §6 are present");
}
