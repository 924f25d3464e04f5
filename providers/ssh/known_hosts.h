// Host key verification against an OpenSSH known_hosts file (plain, hashed `|1|` and
// `[host]:port` entries; `@revoked` lines reject a key), and the helpers the messages need.
#pragma once

#include <libssh2.h>

#include <string>

#include "engine/status.h"
#include "providers/ssh/session.h"

namespace onboard::ssh {

// The algorithm name stored at the start of an SSH public key blob ("ssh-ed25519", ...), or "".
std::string KeyBlobType(const std::string& blob);
// "ED25519", "ECDSA", "RSA", "DSA" (as OpenSSH prints it) for a blob algorithm name.
std::string KeyTypeLabel(const std::string& blob_type);
// The `ssh-keyscan -t` name: "ed25519", "ecdsa", "rsa", "dsa".
std::string KeyscanType(const std::string& blob_type);
// "SHA256:<unpadded base64 of sha256(blob)>", the form `ssh-keygen -l` prints.
std::string Sha256Fingerprint(const std::string& blob);

// The name a known_hosts line uses for host:port: "host" for port 22, else "[host]:port".
std::string KnownHostsName(const std::string& host, int port);
// $HOME/.ssh/known_hosts (the passwd home when HOME is unset).
std::string DefaultKnownHostsPath();
// "~" or "~/x" -> the home directory (as above) or home + "/x"; other paths unchanged.
std::string ExpandHome(const std::string& path);

// Verifies the key the server presented in `session` (after the handshake) for ep.host:ep.port
// against the file ep.known_hosts (default: DefaultKnownHostsPath()), following ep.host_keys:
//  - known and equal: ok;
//  - unknown: error with the fingerprint and the ssh-keyscan command, or (accept_new) the key
//    is appended to the file;
//  - changed or revoked: error with both fingerprints; only insecure_ignore goes past it.
Status VerifyHostKey(LIBSSH2_SESSION* session, const Endpoint& ep);

}  // namespace onboard::ssh
