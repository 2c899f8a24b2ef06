//! OpenEDC's example project (tests/data/odm/real/openedc): an export in two files, as OpenEDC
//! writes them, the study's metadata (`study from-odm` reads it) and its clinical data (`odm
//! import` reads it), through the same path and oracle as the other real exports.

use super::*;

#[tokio::test]
async fn openedc_example_project_is_stored_as_its_values() {
    // Its clinical data names no site (each subject's AuditRecord has the location `-`): --site.
    let export = Export {
        file: "openedc/clinicaldata.xml",
        metadata: Some("openedc/metadata.xml"),
        site: "SITE.OPENEDC",
        visit: None,
    };
    let report = round_trip(&export, &[], 1684).await;
    assert_eq!(report["published"], 366, "{report}");
}
