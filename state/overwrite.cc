#include "state/overwrite.h"

namespace onboard {

Status CheckOverwrite(const std::string& lineage, int64_t serial, const State& next, bool replacing_lineage,
                      const std::string& elsewhere, const std::string& newer_note) {
  if (lineage != next.lineage && !replacing_lineage)
    return Status::Error("it holds a different state (lineage " + lineage + ", this state has lineage " +
                         next.lineage + "); " + elsewhere);
  if (serial > next.serial)
    return Status::Error("it is at serial " + std::to_string(serial) + ", newer than this state's serial " +
                         std::to_string(next.serial) + newer_note + "; run the command again");
  return Status::Ok();
}

}  // namespace onboard
