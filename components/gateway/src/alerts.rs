//! The tenant admin's alerts (`GET /api/admin/alerts`, `POST /api/admin/alerts/{id}/acknowledge`),
//! answered from the `audit` database after the same verification, policy and audit as the
//! other admin routes (`admin` in `lib.rs` has already allowed the caller for its own tenant),
//! and the alert counters of `/metrics`. The rules and their storage are `health_spin::alerts`.

use health_core::Caller;
use health_core::audit::Event;
use health_core::routes::Api;
use health_spin::alerts;
use health_spin::respond::{self, Cache};
use spin_sdk::http::Response;

/// Lists or acknowledges the caller's own tenant's alerts; 404 for an alert id the tenant does
/// not have (another tenant's included).
pub fn answer(api: &Api, caller: &Caller, event: &mut Event) -> anyhow::Result<Response> {
    let tenant = caller.tenant_id.to_string();
    let conn = health_spin::audit::open()?;
    Ok(match api {
        Api::Alerts(filter) => {
            let listed = alerts::list(&*conn, &tenant, filter)?;
            let next_after = listed.last().map(|a| a.id);
            let body = serde_json::json!({ "tenant_id": tenant, "alerts": listed, "next_after": next_after });
            respond::json(200, &body, Cache::NoStore)
        }
        Api::AcknowledgeAlert(id) => {
            match alerts::acknowledge(&*conn, &tenant, *id, &caller.subject.to_string(), event.time)? {
                Some(alert) => respond::json(200, &alert, Cache::NoStore),
                None => crate::answer(health_core::Refusal::NotFound(health_core::Reason::NoSuchAlert), event),
            }
        }
        _ => anyhow::bail!("not an alert route: {}", api.template()),
    })
}

/// `health_alerts_total{rule}` (every rule, zero included) and
/// `health_alert_evaluation_failures_total`, in the Prometheus text format.
pub fn metrics() -> anyhow::Result<String> {
    let counters = alerts::counters(&*health_spin::audit::open()?)?;
    Ok(render(&counters))
}

fn render(counters: &alerts::Counters) -> String {
    let mut out = String::from(
        "# HELP health_alerts_total Alerts raised, by rule (one per subject and window).\n\
         # TYPE health_alerts_total counter\n",
    );
    for (rule, n) in &counters.by_rule {
        out.push_str(&format!("health_alerts_total{{rule=\"{}\"}} {n}\n", rule.as_str()));
    }
    out.push_str(&format!(
        "# HELP health_alert_evaluation_failures_total Alert evaluations that failed after their event was recorded.\n\
         # TYPE health_alert_evaluation_failures_total counter\n\
         health_alert_evaluation_failures_total {}\n",
        counters.evaluation_failures
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_core::alerts::Rule;

    #[test]
    fn alert_counters_render_every_rule() {
        let counters = alerts::Counters {
            by_rule: Rule::ALL.iter().map(|r| (*r, i64::from(*r == Rule::BreakGlass) * 2)).collect(),
            evaluation_failures: 1,
        };
        let text = render(&counters);
        assert!(text.contains("health_alerts_total{rule=\"break_glass\"} 2\n"), "{text}");
        assert!(text.contains("health_alerts_total{rule=\"failed_logins_user\"} 0\n"), "{text}");
        assert!(text.contains("health_alert_evaluation_failures_total 1\n"), "{text}");
    }
}
