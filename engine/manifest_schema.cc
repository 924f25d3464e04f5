// schemas/fleet.schema.json compiled into the library, so the binary validates the same way
// wherever it runs. The file is embedded byte for byte with the assembler's .incbin; the test
// EmbeddedSchemaMatchesFile (tests/engine/manifest) fails if the build is older than the file.
#include <string>

#include "engine/manifest.h"

#ifndef ONBOARD_SOURCE_DIR
#error "ONBOARD_SOURCE_DIR must name the repository root"
#endif

asm(".pushsection .rodata.onboard_fleet_schema, \"a\"\n"
    ".balign 16\n"
    "onboard_fleet_schema_begin:\n"
    ".incbin \"" ONBOARD_SOURCE_DIR "/schemas/fleet.schema.json\"\n"
    "onboard_fleet_schema_end:\n"
    ".byte 0\n"
    ".popsection\n"
    ".pushsection .data.rel.ro.onboard_fleet_schema_bounds, \"aw\"\n"
    ".balign 8\n"
    ".globl onboard_fleet_schema_bounds\n"
    ".hidden onboard_fleet_schema_bounds\n"
    "onboard_fleet_schema_bounds:\n"
    ".quad onboard_fleet_schema_begin\n"
    ".quad onboard_fleet_schema_end\n"
    ".popsection\n");

extern "C" const char* const onboard_fleet_schema_bounds[2];

namespace onboard {

const std::string& FleetSchemaText() {
  static const std::string text(onboard_fleet_schema_bounds[0],
                                onboard_fleet_schema_bounds[1] - onboard_fleet_schema_bounds[0]);
  return text;
}

}  // namespace onboard
