#include "daemon/daemon.hpp"

int main(int argc, char** argv) {
    return agentgw::daemon_main(argc, argv);
}
