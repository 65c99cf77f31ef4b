// The web dashboard's files (clients/dashboard and uPlot's dist files), embedded into ssm-server
// at build time: server/service/dashboard_assets.cmake generates their definition.
#pragma once

#include <cstddef>
#include <string_view>

namespace ssm {

struct DashboardAsset {
  std::string_view path;          // URL path: "/" or "/static/<file name>"
  std::string_view content_type;  // e.g. "text/html; charset=utf-8"
  std::string_view body;
};

extern const DashboardAsset kDashboardAssets[];
extern const size_t kDashboardAssetCount;

}  // namespace ssm
