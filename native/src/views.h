// Mammographic views (runtime/io/views.py): the CC family, and the view a file name states.
#pragma once

#include <string>

namespace mc {

// The view a file name states (runtime/io/views.py view_from_name): the last path component, suffix removed,
// split at every character that is not an ASCII letter or digit; a token CC, MLO, ML, LM, LMO, XCCL or XCCM,
// alone or after 'L' / 'R' (e.g. 'LCC'), states the view. "" when none does or tokens disagree.
std::string view_from_name(const std::string& path);

// True for a view of the CC family (CC, XCCL, XCCM, FB, CV), case-insensitive; false for "".
bool is_cc_view(const std::string& view);

}  // namespace mc
