// StrCat that also takes std::string_view.
//
// Debian's abseil (20220623) is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), so absl::StrCat rejects std::string_view arguments. Strata's interfaces use std::string_view;
// strata::StrCat converts those arguments and forwards everything else to absl::StrCat unchanged.
#ifndef STRATA_COMMON_STRINGS_H_
#define STRATA_COMMON_STRINGS_H_

#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace strata {
namespace strings_internal {

template <typename T>
decltype(auto) ToAlphaNum(const T& value) {
  if constexpr (std::is_convertible_v<const T&, std::string_view> &&
                !std::is_convertible_v<const T&, absl::string_view>) {
    std::string_view view = value;
    return absl::string_view(view.data(), view.size());
  } else {
    return (value);
  }
}

}  // namespace strings_internal

template <typename... Args>
std::string StrCat(const Args&... args) {
  return absl::StrCat(strings_internal::ToAlphaNum(args)...);
}

}  // namespace strata

#endif  // STRATA_COMMON_STRINGS_H_
