// POSIX-shell quoting and Endpoint formatting.
#include <string>
#include <vector>

#include "providers/ssh/session.h"

namespace onboard::ssh {

std::string ShellQuote(const std::string& value) {
  // Inside single quotes nothing is special except the closing quote itself; a literal quote is
  // written as '\'' (close, escaped quote, reopen). Bytes (newlines, non-ASCII) pass through.
  std::string out;
  out.reserve(value.size() + 2);
  out.push_back('\'');
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

std::string ShellJoin(const std::vector<std::string>& argv) {
  std::string out;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (i) out.push_back(' ');
    out += ShellQuote(argv[i]);
  }
  return out;
}

std::string Endpoint::ToString() const {
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";  // IPv6 literal
  return (user.empty() ? std::string() : user + "@") + h + ":" + std::to_string(port);
}

}  // namespace onboard::ssh
