#pragma once

// The Control Center's static files (drivers/web), built into the library by
// cmake/embed_web.cmake and served by the router at / and /ui/.

#include <string_view>

namespace ticktock::drivers {

struct web_asset {
  std::string_view path;          ///< "/index.html", "/app.js", ...
  std::string_view content_type;
  std::string_view body;
};

/// The file at `path` ("/index.html"), or nullptr.
const web_asset* find_web_asset(std::string_view path);

}  // namespace ticktock::drivers
