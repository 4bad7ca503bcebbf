#pragma once

// Umbrella header of ticktock: the agent author's API, the node, and the
// deterministic test harness.

#include "ticktock/actors/node.hpp"
#include "ticktock/actors/options.hpp"
#include "ticktock/actors/test_harness.hpp"
#include "ticktock/runtime/agent.hpp"
#include "ticktock/runtime/agent_id.hpp"
#include "ticktock/runtime/clock.hpp"
#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/error.hpp"
#include "ticktock/runtime/fetch.hpp"
#include "ticktock/runtime/identity.hpp"
#include "ticktock/runtime/nostr.hpp"
#include "ticktock/runtime/registry.hpp"
#include "ticktock/runtime/serializer.hpp"
#include "ticktock/runtime/trigger.hpp"
#include "ticktock/storage/records.hpp"
#include "ticktock/storage/store.hpp"
