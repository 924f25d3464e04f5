// The rule every backend's Write() applies to the state it is about to replace, so that the local, kubernetes
// and http backends refuse the same things in the same words.
#pragma once

#include <cstdint>
#include <string>

#include "engine/state.h"
#include "engine/status.h"

namespace onboard {

// Whether `next` may replace the state there (of `lineage`, at `serial`, as the store last read or wrote
// it). An error, to follow the backend's "refusing to write ...: ", when the state there is another one
// (another lineage; allowed while `replacing_lineage`, i.e. StateStore::Replace for state push --force),
// saying `elsewhere` (where else to keep another state), or when it is at a newer serial (another run
// wrote it since), with `newer_note` after the serials.
Status CheckOverwrite(const std::string& lineage, int64_t serial, const State& next, bool replacing_lineage,
                      const std::string& elsewhere, const std::string& newer_note = "");

}  // namespace onboard
