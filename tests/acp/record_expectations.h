// Field-by-field comparisons of the StateStore's records, shared by the store tests.
#pragma once

#include <gtest/gtest.h>

#include "acp/state_store.h"

namespace dwcp::acp {

inline void ExpectNodeEq(const NodeRecord& a, const NodeRecord& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.region, b.region);
  EXPECT_EQ(a.api_url, b.api_url);
  EXPECT_EQ(a.data_address, b.data_address);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.started_ms, b.started_ms);
  EXPECT_EQ(a.heartbeat_ms, b.heartbeat_ms);
}

// Every field but updated_ms, which the store stamps.
inline void ExpectVmEq(const VmRecord& a, const VmRecord& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.node_id, b.node_id);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.migration_id, b.migration_id);
  EXPECT_EQ(a.driver, b.driver);
  EXPECT_EQ(a.memory_bytes, b.memory_bytes);
  EXPECT_EQ(a.dirty_rate, b.dirty_rate);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.created_ms, b.created_ms);
}

// Every field but updated_ms.
inline void ExpectMigrationEq(const MigrationRecord& a, const MigrationRecord& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.vm_id, b.vm_id);
  EXPECT_EQ(a.source_node, b.source_node);
  EXPECT_EQ(a.dest_node, b.dest_node);
  EXPECT_EQ(a.phase, b.phase);
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.protocol, b.protocol);
  EXPECT_EQ(a.round, b.round);
  EXPECT_EQ(a.memory_bytes, b.memory_bytes);
  EXPECT_EQ(a.bytes_transferred, b.bytes_transferred);
  EXPECT_EQ(a.network_bytes, b.network_bytes);
  EXPECT_EQ(a.remaining_bytes, b.remaining_bytes);
  EXPECT_EQ(a.throughput_bps, b.throughput_bps);
  EXPECT_EQ(a.downtime_ms, b.downtime_ms);
  EXPECT_EQ(a.total_ms, b.total_ms);
  EXPECT_EQ(a.epoch_before, b.epoch_before);
  EXPECT_EQ(a.source_digest, b.source_digest);
  EXPECT_EQ(a.dest_digest, b.dest_digest);
  EXPECT_EQ(a.created_ms, b.created_ms);
  EXPECT_EQ(a.finished_ms, b.finished_ms);
  EXPECT_EQ(a.trace_id, b.trace_id);
  EXPECT_EQ(a.precopy_started_ms, b.precopy_started_ms);
  EXPECT_EQ(a.switchover_started_ms, b.switchover_started_ms);
  EXPECT_EQ(a.commit_started_ms, b.commit_started_ms);
  EXPECT_EQ(a.amst_seconds, b.amst_seconds);
  EXPECT_EQ(a.hde_seconds, b.hde_seconds);
  EXPECT_EQ(a.acp_seconds, b.acp_seconds);
}

}  // namespace dwcp::acp
