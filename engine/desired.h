// The desired resources of a model: a pure function of the manifests and (when read) the
// cluster's mesh facts. This header is also the contract of each resource type's attributes,
// payload and observed facts, shared by the engine, the providers and the state.
//
// Every VM-side resource carries attributes.connection = {host, port, user, identity_file,
// known_hosts}: how to reach the VM (needed to destroy an orphan from state alone). The diff
// never compares `connection` (a VM reached another way needs no change).
//
// mesh_expansion.<cluster>
//   attributes {control_plane, namespace}           observed {uid, resourceVersion, was_on}
// workload_entry.<ns>/<name>, sidecar.<ns>/<name>
//   attributes {object: the full object onboard applies (apiVersion, kind, metadata{name,
//   namespace, labels, annotations}, spec)}          observed {uid, resourceVersion}
// token.<ns>/<name>
//   attributes {namespace, service_account, audience, duration_seconds}
//   payload {renew_before_seconds}                   observed {sha256, expires_at, issued_at}
//   Apply puts the minted token in SecretBag under (workload, "token").
// files.<ns>/<name>
//   attributes {connection, dir, files: {"sidecar.env": {mode: "0644", sha256},
//     "istio-ca.pem": {...}, "k8s-ca.pem": {...}, "istio-token": {mode: "0640"}}}
//   payload {contents: {"sidecar.env": text, "istio-ca.pem": pem, "k8s-ca.pem": pem}}
//   observed {files: {name: {sha256, mode}}}  (istio-token's sha256 is the token's)
// hosts.<ns>/<name>
//   attributes {connection, hosts_file, entries: {ip: [names]}}   observed {sha256}
// container.<ns>/<name>
//   attributes {connection, name, image, docker, config_hash}
//   payload {argv: the docker run arguments after "docker"}
//   observed {id, running, config_hash, image}
// check.gateway.<ns>/<name>   attributes {connection, gateway, ports}   (never stored)
// check.inbound.<ns>/<name>   attributes {address, ports}               (never stored)
#pragma once

#include <optional>
#include <vector>

#include "engine/facts.h"
#include "engine/model.h"
#include "engine/resource.h"

namespace onboard {

// facts == nullptr: values derived from the cluster are Unknown().
std::vector<Resource> BuildDesired(const Model& model, const MeshFacts* facts);

}  // namespace onboard
