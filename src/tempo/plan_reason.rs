//! The planner's slot descriptions: the action, its expected € effect and a one-line reason in
//! words ("charge to 100 % tonight: tomorrow red (rte), 6.1 kWh expected in red HP, Monday red
//! 72 %; configured load"). Every reason ends with where the load it counts on came from
//! ("learned load (N days)" or "configured load"; a night names the next peak hours' source)
//! and, with several batteries, this battery's share of it ("…, 33 % of it for this battery (by
//! capacity)"; the kWh in the reason are that share).
//! Pure; reads the optimised path, decides nothing.

use chrono::{DateTime, Duration, Utc};

use super::{Ctx, Frame, PlanSlot, SlotAction, charge_power, gain, refill_price, weekday_name};
use crate::tempo::tariff::Period;
use crate::tempo::tempo_date_at;

/// "today", "tomorrow" or the weekday of `f`'s Tempo day, seen from `now`.
fn when(now: DateTime<Utc>, f: &Frame) -> String {
    let today = tempo_date_at(now);
    if f.date == today {
        "today".into()
    } else if f.date == today + Duration::days(1) {
        "tomorrow".into()
    } else {
        weekday_name(f.date).into()
    }
}

/// The colour of `f` in words: "red (rte)", "red 72 % (open-dpe)", "red assumed (fail-safe)".
fn colour_phrase(f: &Frame) -> String {
    if let Some((c, source)) = &f.known {
        return format!("{c} ({source})");
    }
    if f.fail_safe {
        return "unknown, red assumed (fail-safe)".into();
    }
    let (c, p) = f.odds.likeliest();
    if p >= 1.0 - 1e-9 && f.source.is_none() {
        return format!("{c} (calendar)");
    }
    let pct = (p * 100.0).round();
    match &f.source {
        Some(src) => format!("{c} {pct} % ({src})"),
        None => format!("{c} {pct} % (calendar and stock)"),
    }
}

/// Later HP days of the horizon likely to be red, as ", Monday red 72 %".
fn later_reds(ctx: &Ctx, after: usize) -> String {
    ctx.frames
        .iter()
        .skip(after + 1)
        .filter(|f| f.period == Period::Hp && f.odds.red >= 0.5)
        .map(|f| format!(", {} {}", when(ctx.now, f), colour_phrase(f)))
        .collect()
}

/// The HP frame following `k`, if any.
fn next_hp<'a>(ctx: &'a Ctx, k: usize) -> Option<(usize, &'a Frame)> {
    ctx.frames
        .iter()
        .enumerate()
        .skip(k + 1)
        .find(|(_, f)| f.period == Period::Hp)
}

/// The slot `k`, starting at SOC `soc` (% index) and ending where the optimised path says.
pub(super) fn describe(ctx: &Ctx, k: usize, soc: usize) -> PlanSlot {
    let f = &ctx.frames[k];
    let to = ctx.path[k];
    let (action, reason) = match f.period {
        Period::Hc if to > soc => charge(ctx, k, soc, to),
        Period::Hc => (SlotAction::Hold, hold_night(ctx, k, soc)),
        Period::Hp if to < soc => discharge(ctx, k, soc, to),
        Period::Hp => (SlotAction::Hold, hold_day(ctx, k, soc)),
    };
    // Where the load the slot counts on came from: a night plans for the next peak hours.
    let load_from = match f.period {
        Period::Hc => next_hp(ctx, k).map_or(f.load_source, |(_, h)| h.load_source),
        Period::Hp => f.load_source,
    };
    let reason = format!(
        "{reason}; {}{}",
        load_from.phrase(),
        super::share::share_phrase(ctx.battery.load_share)
    );
    let mut eur = gain(f, soc, to, ctx.grid, ctx.params);
    if to < soc {
        // The bill effect: wear is a planning cost, not on the invoice.
        eur += (soc - to) as f64 * ctx.grid.kwh_per_step * ctx.params.tariff.wear;
    }
    let (colour, probability) = match &f.known {
        Some((c, _)) => (*c, 1.0),
        None => f.odds.likeliest(),
    };
    PlanSlot {
        start: f.start,
        end: f.end,
        date: f.date,
        period: f.period,
        colour,
        probability,
        action,
        soc_end: to.min(100) as u8,
        eur: (eur * 10_000.0).round() / 10_000.0,
        reason,
    }
}

fn night(ctx: &Ctx, f: &Frame) -> String {
    let first_hc = ctx.frames.iter().position(|x| x.period == Period::Hc);
    if first_hc.is_some_and(|i| std::ptr::eq(&ctx.frames[i], f)) {
        "tonight".into()
    } else {
        format!("{} night", weekday_name(f.date))
    }
}

fn charge(ctx: &Ctx, k: usize, soc: usize, to: usize) -> (SlotAction, String) {
    let f = &ctx.frames[k];
    let power_w = charge_power(f, soc, to, ctx.battery, ctx.params.margin);
    let action = SlotAction::Charge {
        target_soc: to.min(100) as u8,
        power_w,
    };
    let why = match next_hp(ctx, k) {
        Some((j, h)) => format!(
            "{} {}, {:.1} kWh expected in {} HP{}",
            when(ctx.now, h),
            colour_phrase(h),
            h.load_kwh,
            h.odds.likeliest().0,
            later_reds(ctx, j)
        ),
        None => "energy for later".into(),
    };
    (action, format!("charge to {to} % {}: {why}", night(ctx, f)))
}

fn hold_night(ctx: &Ctx, k: usize, soc: usize) -> String {
    let f = &ctx.frames[k];
    let head = format!("hold {} at {soc} %", night(ctx, f));
    if soc >= ctx.grid.hi {
        return format!("{head}: already full (max {} %)", ctx.grid.hi);
    }
    let refill = f.price / ctx.params.efficiency;
    match next_hp(ctx, k) {
        Some((_, h)) if h.price - ctx.params.tariff.wear > refill => format!(
            "{head}: enough for {} {} HP ({:.1} kWh expected)",
            when(ctx.now, h),
            colour_phrase(h),
            h.load_kwh
        ),
        Some((_, h)) => format!(
            "{head}: {} {} HP at {:.4} €/kWh less {:.4} wear does not pay back {:.4} €/kWh of charge",
            when(ctx.now, h),
            colour_phrase(h),
            h.price,
            ctx.params.tariff.wear,
            refill
        ),
        None => format!("{head}: nothing later in the horizon to charge for"),
    }
}

fn discharge(ctx: &Ctx, k: usize, soc: usize, to: usize) -> (SlotAction, String) {
    let f = &ctx.frames[k];
    let out = (soc - to) as f64 * ctx.grid.kwh_per_step;
    let mut why = format!(
        "discharge down to {to} % {}: {} HP at {:.4} €/kWh, {:.1} of {:.1} kWh expected",
        when(ctx.now, f),
        colour_phrase(f),
        f.price,
        out.min(f.load_kwh),
        f.load_kwh
    );
    if to > ctx.grid.lo && out + ctx.grid.kwh_per_step < f.load_kwh {
        let later = dearest_later(ctx, k)
            .map(|h| format!("{} {}", when(ctx.now, h), colour_phrase(h)))
            .unwrap_or_else(|| "later".into());
        why.push_str(&format!(", keeping {to} % for {later}"));
    }
    (
        SlotAction::Discharge {
            floor_soc: to.min(100) as u8,
        },
        why,
    )
}

/// The later HP frame with the highest expected price.
fn dearest_later<'a>(ctx: &'a Ctx, k: usize) -> Option<&'a Frame> {
    ctx.frames
        .iter()
        .skip(k + 1)
        .filter(|f| f.period == Period::Hp)
        .fold(None, |best: Option<&Frame>, f| match best {
            Some(b) if b.price >= f.price => Some(b),
            _ => Some(f),
        })
}

fn hold_day(ctx: &Ctx, k: usize, soc: usize) -> String {
    let f = &ctx.frames[k];
    if soc <= ctx.grid.lo {
        return format!(
            "hold at {soc} %: at the floor ({} %, DOD and envelope), nothing to discharge",
            ctx.grid.lo
        );
    }
    let net = f.price - ctx.params.tariff.wear;
    let head = format!(
        "hold at {soc} % {}: {} HP saves {net:.4} €/kWh after wear",
        when(ctx.now, f),
        colour_phrase(f)
    );
    match dearest_later(ctx, k) {
        Some(h) if h.price - ctx.params.tariff.wear > refill_price(ctx.frames, ctx.params) => {
            format!(
                "{head}, keep it for {} {} HP at {:.4} €/kWh",
                when(ctx.now, h),
                colour_phrase(h),
                h.price
            )
        }
        _ => format!(
            "{head}, less than the {:.4} €/kWh it costs to refill",
            refill_price(ctx.frames, ctx.params)
        ),
    }
}
