// The http state backend: Terraform's http backend protocol (GET/POST of the state, LOCK/UNLOCK
// with lock-info JSON, 409/423 with the holder when held, ?ID= on writes while locked, basic
// auth, retries), so servers that already speak it work.
//
// Configuration (spec.backend, --backend-config KEY=VALUE; values are strings or numbers):
//   address        required, http:// or https://: GET reads the state (200 with the JSON; 204,
//                  404 or an empty 200: no state), updateMethod writes it (200/201/204)
//   updateMethod   POST
//   lockAddress    no default: without it runs are NOT locked (a warning says so), as with
//                  Terraform's http backend
//   lockMethod     LOCK        (200: locked; 409 or 423 with the holder's lock info: held)
//   unlockAddress  lockAddress
//   unlockMethod   UNLOCK      (body: the lock info of the lock to release)
//   username, password   basic auth; ONBOARD_HTTP_USERNAME / ONBOARD_HTTP_PASSWORD override
//                  them (a password written in the configuration draws a warning)
//   caFile         PEM bundle that verifies an https server (TLS is always verified)
//   retryMax 2, retryWaitMin 1, retryWaitMax 30 (seconds, fractions allowed): connection
//                  errors, 429 and 5xx (not 501) are retried with exponential backoff
// Addresses must not carry credentials (user:password@host); messages show an address as
// scheme://host:port/path, without its query, which may carry a token.
//
// Holder(): the protocol has no way to ask who holds a lock without taking it, so Holder()
// returns the lock this store holds, and nullopt otherwise. A contender learns the holder from
// the server's 409/423 answer, which Lock() puts in its error.
//
// Write() refuses after a failed Read() (a corrupt, undecodable or newer-format state is never
// overwritten), refuses another lineage or an older serial than the one it last read or wrote
// (on its first write it reads the state first), and sends nothing when the bytes are the ones
// it last read or wrote. The body is LocalStateStore::Serialize's, so a GET of the address is a
// valid local state file.
//
// Not thread-safe: one store per thread of control.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/state.h"

namespace onboard {

// config: spec.backend of the Fleet (minus "type") merged with --backend-config KEY=VALUE.
// origin names where config came from, for error messages.
Result<std::unique_ptr<StateStore>> OpenHttpStateStore(const nlohmann::json& config, const std::string& origin);

}  // namespace onboard
