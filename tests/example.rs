//! Runs examples/mixup_pause.rs: the EP ends, Mixup is off before the end and on after, and the
//! loss comes down.

#[path = "../examples/mixup_pause.rs"]
mod example;

#[test]
fn the_mixup_pause_example_trains_and_switches_mixup_on_at_the_ep_end() {
    let (log, schedule) = example::run(200).unwrap();
    let end = schedule.phase().ended().expect("the EP ends on this easy problem").step;
    assert!(end > 0 && end < 200, "EP end at step {end}");
    for (plan, _) in &log {
        assert_eq!(plan.in_ep, plan.step < end);
        assert_eq!(plan.mix.mixes(), plan.step >= end, "Mixup off in the EP, on after (step {})", plan.step);
    }
    let first: f64 = log[..10].iter().map(|(_, l)| l).sum::<f64>() / 10.0;
    let last_unmixed = log[..end as usize].last().unwrap().1;
    assert!(last_unmixed < first, "loss went down during the EP: {first} -> {last_unmixed}");
}
