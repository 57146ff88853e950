// Boost.URL's compiled part, built into the daemon library (Debian ships the headers only with
// libboost1.81-dev; this keeps the build to that one package).
#include <boost/url/src.hpp>
