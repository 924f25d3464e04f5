// The kubernetes state backend: the state in Secrets (gzipped, split into parts below the 1 MiB
// object limit), the lock in a coordination.k8s.io/v1 Lease that the holder renews while it runs
// and that expires when the holder dies; every state write is conditional on resourceVersion.
//
// Settings (spec.backend minus type, and --backend-config KEY=VALUE; strings or numbers):
//   namespace             where the objects live (default "default"; must exist)
//   name                  the state's name (default: the Fleet's metadata.name); a DNS-1123 name of at
//                         most 63 characters, because it is also a label value
//   kubeconfig, context   the cluster (default --kubeconfig/--context, then the Fleet's spec.cluster,
//                         then $KUBECONFIG or ~/.kube/config and its current-context)
//   leaseDurationSeconds  how long the lock outlives a holder that stopped renewing it (default 30,
//                         2..3600); the holder renews it every third of that
//
// Objects, all labelled app.kubernetes.io/managed-by=onboard and onboard.tetrate.io/state=<name>:
//   Secret onboard-state-<name> (the index; the commit point)
//     data["state.json.gz"]                      part 0 of the gzip (RFC 1952) of the state JSON
//     annotation onboard.tetrate.io/sha256       sha256 (hex) of the whole gzip stream
//     annotation onboard.tetrate.io/size         its length in bytes
//     annotation onboard.tetrate.io/parts        names of the further parts, in order, comma-separated
//                                                ("" when the state fits in the index)
//     annotation onboard.tetrate.io/lineage, onboard.tetrate.io/serial   copies of the state's own
//   Secret onboard-state-<name>-<first 12 hex of the sha256>-<i>, i = 1..n-1 (only for states whose
//   gzip exceeds 512 KiB): data["state.json.gz"] is part i (512 KiB each, the last one shorter),
//   label onboard.tetrate.io/part=<i>, annotation onboard.tetrate.io/sha256 (of the whole stream).
//   The gzip is the concatenation of the parts; each Secret stays well below the 1 MiB limit.
//   Lease onboard-lock-<name>: spec.holderIdentity = lock ID, leaseDurationSeconds, acquireTime,
//   renewTime (MicroTime), leaseTransitions; annotation onboard.tetrate.io/lock-info = LockInfo JSON.
//
// Read: the index, then every part; each part must carry the index's digest and its position, the
// concatenation must have the recorded size and sha256, gunzip and decode. Any failure is an error
// naming the Secret (never a silent empty state), and Write refuses afterwards: a state onboard could
// not read is never overwritten. An absent index is no state. A part that vanished because another
// writer committed meanwhile (the index's resourceVersion changed) makes Read start over.
//
// Write: nothing when the JSON is the one last read or written. Otherwise (1) create the new parts
// (POST; names carry the digest, so the previous parts stay intact), (2) replace the index by PUT
// with metadata.resourceVersion from this store's last Read/Write (create it by POST when there was
// none: AlreadyExists then means another writer, and the write is refused), (3) delete the parts the
// previous index listed. A refused or failed commit deletes the parts it created; the previous state
// is untouched. A commit whose response was lost is recognised by reading the index back (its digest
// and serial are ours). The first write of each lock hold also deletes leftover parts of crashed
// writers (labelled parts the index does not list) — safe because every writer holds the lock.
// Labels and annotations that others put on the index are kept.
//
// Lock: acquire by POST of the Lease (absent), or by PUT with its resourceVersion when its holder is
// empty or its lease expired: renewTime + leaseDurationSeconds < now, or — while waiting with
// --lock-timeout — its resourceVersion did not change for a whole leaseDurationSeconds of this
// process's monotonic clock (as client-go's leader election judges it: immune to clock skew). A
// background thread renews the Lease every leaseDurationSeconds/3 by PUT with resourceVersion. When a
// renewal finds the Lease deleted or held by another ID, or no renewal succeeded within
// leaseDurationSeconds of the last successful one, the lock is LOST: every later Write is refused
// ("the state lock was lost ...; nothing was written") until the next Lock. Unlock stops the renewer
// and DELETEs the Lease with uid and resourceVersion preconditions (release choice: no Lease exists
// while nobody holds the lock, so `kubectl get lease` shows only live locks). ForceUnlock deletes it
// the same way, only when the ID given is the holder's. Holder() reports an expired lease's holder
// with "lease expired at T" appended to its operation.
//
// Not thread-safe: one store per thread of control (the renewer is internal). Messages name the
// server and context but never a credential.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/state.h"

namespace onboard {

// Where the backend finds its cluster when its own config names none: --kubeconfig/--context,
// then the Fleet's spec.cluster.
struct KubernetesBackendDefaults {
  std::string kubeconfig;
  std::string context;
  std::string name;  // the Fleet's metadata.name: the default state name
};

// config: spec.backend of the Fleet (minus "type") merged with --backend-config KEY=VALUE.
// origin names where config came from, for error messages ("spec.backend in fleet.yaml").
Result<std::unique_ptr<StateStore>> OpenKubernetesStateStore(const nlohmann::json& config,
                                                             const KubernetesBackendDefaults& defaults,
                                                             const std::string& origin);

}  // namespace onboard
