//! Membership over chitchat's in-process transport (real gossip and
//! failure detection, no sockets): members see each other and what they
//! publish, a stopped member is declared dead, a restarted one replaces
//! its older incarnation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chitchat::transport::ChannelTransport;
use stead_types::FenceToken;

use super::*;

fn config(i: u16, seeds: &[u16]) -> MembershipConfig {
    let addr: SocketAddr = ([127, 0, 0, 1], 10_000 + i).into();
    let mut config = MembershipConfig::new(format!("node-{i}"), addr);
    config.seeds = seeds
        .iter()
        .map(|s| format!("127.0.0.1:{}", 10_000 + s))
        .collect();
    config.gossip_interval = Duration::from_millis(50);
    config.grpc_advertise = format!("127.0.0.1:{}", 7400 + i);
    config.http_advertise = format!("127.0.0.1:{}", 7480 + i);
    config
}

async fn wait_for(
    membership: &Membership,
    within: Duration,
    what: &str,
    done: impl Fn(&[Member]) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut watch = membership.watch();
    loop {
        if done(&watch.borrow_and_update()) {
            return started.elapsed();
        }
        let left = within.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: not within {within:?}: {:?}",
            membership.members()
        );
        let _ = tokio::time::timeout(left, watch.changed()).await;
    }
}

fn ids(members: &[Member], state: MemberState) -> Vec<String> {
    members
        .iter()
        .filter(|m| m.state == state)
        .map(|m| m.node_id.clone())
        .collect()
}

#[tokio::test]
async fn members_see_each_other_ready_with_their_addresses_and_shards() {
    let transport = ChannelTransport::with_mtu(65_507);
    let a = Membership::start(config(1, &[]), &transport)
        .await
        .expect("a");
    let b = Membership::start(config(2, &[1]), &transport)
        .await
        .expect("b");
    let c = Membership::start(config(3, &[1]), &transport)
        .await
        .expect("c");
    for m in [&a, &b, &c] {
        m.set_state(MemberState::Ready).await;
    }
    b.set_shards(&[
        FenceToken { shard: 7, epoch: 3 },
        FenceToken { shard: 2, epoch: 1 },
    ])
    .await;
    wait_for(
        &a,
        Duration::from_secs(10),
        "a sees three ready members",
        |m| {
            ids(m, MemberState::Ready) == ["node-1", "node-2", "node-3"]
                && m.iter()
                    .any(|x| x.node_id == "node-2" && x.shards.len() == 2)
        },
    )
    .await;
    let seen = a.members();
    let b_seen = seen.iter().find(|m| m.node_id == "node-2").expect("b");
    assert_eq!(b_seen.grpc, "127.0.0.1:7402");
    assert_eq!(b_seen.http, "127.0.0.1:7482");
    assert_eq!(
        b_seen.shards,
        vec![
            FenceToken { shard: 2, epoch: 1 },
            FenceToken { shard: 7, epoch: 3 }
        ]
    );
    for m in [a, b, c] {
        m.shutdown();
    }
}

#[tokio::test]
async fn a_stopped_member_is_declared_dead_and_a_restarted_one_replaces_it() {
    let transport = ChannelTransport::with_mtu(65_507);
    let a = Membership::start(config(1, &[]), &transport)
        .await
        .expect("a");
    let b = Membership::start(config(2, &[1]), &transport)
        .await
        .expect("b");
    let c = Membership::start(config(3, &[1]), &transport)
        .await
        .expect("c");
    for m in [&a, &b, &c] {
        m.set_state(MemberState::Ready).await;
    }
    wait_for(&a, Duration::from_secs(10), "three members", |m| {
        m.len() == 3
    })
    .await;
    let first_generation = a
        .members()
        .into_iter()
        .find(|m| m.node_id == "node-3")
        .expect("c")
        .generation;
    c.shutdown();
    // gossip every 50 ms, phi 6: a death shows in well under a second.
    let took = wait_for(&a, Duration::from_secs(5), "c declared dead", |m| {
        ids(m, MemberState::Ready) == ["node-1", "node-2"]
    })
    .await;
    assert!(took < Duration::from_secs(2), "detection took {took:?}");
    let c = Membership::start(config(3, &[1]), &transport)
        .await
        .expect("c again");
    c.set_state(MemberState::Ready).await;
    wait_for(&a, Duration::from_secs(10), "c back", |m| {
        m.iter()
            .any(|x| x.node_id == "node-3" && x.generation > first_generation)
    })
    .await;
    assert_eq!(
        a.members().iter().filter(|m| m.node_id == "node-3").count(),
        1,
        "one entry per node id"
    );
    for m in [a, b, c] {
        m.shutdown();
    }
}

#[tokio::test]
async fn a_leaving_member_is_seen_leaving_before_it_stops() {
    let transport = ChannelTransport::with_mtu(65_507);
    let a = Membership::start(config(1, &[]), &transport)
        .await
        .expect("a");
    let b = Membership::start(config(2, &[1]), &transport)
        .await
        .expect("b");
    a.set_state(MemberState::Ready).await;
    b.set_state(MemberState::Ready).await;
    wait_for(&a, Duration::from_secs(10), "two ready", |m| {
        ids(m, MemberState::Ready).len() == 2
    })
    .await;
    b.set_state(MemberState::Leaving).await;
    wait_for(&a, Duration::from_secs(5), "b leaving", |m| {
        ids(m, MemberState::Leaving) == ["node-2"]
    })
    .await;
    a.shutdown();
    b.shutdown();
}

/// Waits until `m`'s census satisfies `done`.
async fn wait_census(m: &Membership, what: &str, done: impl Fn(Census) -> bool) -> Census {
    let started = Instant::now();
    loop {
        let census = m.census().await;
        if done(census) {
            return census;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s: {census:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_member_cut_off_from_the_others_knows_it_and_the_majority_does_not_think_so() {
    let transport = ChannelTransport::with_mtu(65_507);
    let addr = |i: u16| -> SocketAddr { ([127, 0, 0, 1], 10_000 + i).into() };
    let mut members = Vec::new();
    for (i, seeds) in [(1, vec![]), (2, vec![1]), (3, vec![1, 2])] {
        let m = Membership::start(config(i, &seeds), &transport)
            .await
            .expect("start");
        m.set_state(MemberState::Ready).await;
        members.push(m);
    }
    for m in &members {
        wait_census(m, "all three reach each other", |c| c.reachable == 3).await;
    }
    // A partition: node-3 on one side, node-1 and node-2 on the other.
    for other in [1, 2] {
        transport.remove_link(addr(3), addr(other)).await;
    }
    let isolated = wait_census(&members[2], "node-3 sees itself cut off", |c| c.cut_off()).await;
    assert_eq!((isolated.reachable, isolated.known), (1, 3));
    let majority = wait_census(&members[0], "node-1 misses node-3", |c| c.reachable == 2).await;
    assert!(!majority.cut_off(), "{majority:?}");
    // Healed: node-3 reaches the majority again.
    for other in [1, 2] {
        transport.add_link(addr(3), addr(other)).await;
    }
    wait_census(&members[2], "node-3 reaches everyone again", |c| {
        !c.cut_off()
    })
    .await;
    // A member that leaves gracefully is not missed: two of two is a majority.
    members[2].set_state(MemberState::Leaving).await;
    wait_for(&members[0], Duration::from_secs(5), "node-3 leaving", |m| {
        ids(m, MemberState::Leaving) == ["node-3"]
    })
    .await;
    members[2].shutdown();
    let after = wait_census(&members[0], "node-3 gone", |c| c.reachable == 2).await;
    assert_eq!(
        after.known, 2,
        "a member that left is not counted: {after:?}"
    );
    for m in &members[..2] {
        m.shutdown();
    }
}

#[test]
fn a_census_is_cut_off_only_from_three_known_members_reaching_at_most_half() {
    let census = |reachable, known| Census { reachable, known };
    assert!(census(1, 3).cut_off());
    assert!(census(2, 4).cut_off());
    assert!(!census(2, 3).cut_off());
    assert!(
        !census(1, 2).cut_off(),
        "two members: no majority either way"
    );
    assert!(!census(1, 1).cut_off());
    assert!(!census(3, 5).cut_off());
}

#[test]
fn shard_lists_round_trip_and_malformed_pairs_are_skipped() {
    let shards = vec![
        FenceToken { shard: 3, epoch: 9 },
        FenceToken { shard: 1, epoch: 2 },
    ];
    let text = encode_shards(&shards);
    assert_eq!(text, "1:2,3:9");
    assert_eq!(
        decode_shards(&text),
        vec![
            FenceToken { shard: 1, epoch: 2 },
            FenceToken { shard: 3, epoch: 9 }
        ]
    );
    assert_eq!(decode_shards(""), vec![]);
    assert_eq!(
        decode_shards("1:2,x:3,4,5:y,6:7"),
        vec![
            FenceToken { shard: 1, epoch: 2 },
            FenceToken { shard: 6, epoch: 7 }
        ]
    );
}
